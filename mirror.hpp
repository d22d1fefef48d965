// Mirror: data-parallel training on every GPU of a workstation (or the CPU), with a Keras-like API.
// The one header a user includes.
#pragma once

#include "engine/activation.hpp"
#include "engine/data/dataset.hpp"
#include "engine/device.hpp"
#include "engine/error.hpp"
#include "engine/gpu_runtime.hpp"
#include "engine/shape.hpp"
#include "engine/verbosity.hpp"
#include "model/applications.hpp"
#include "model/callbacks.hpp"
#include "model/graph.hpp"
#include "model/layers.hpp"
#include "model/losses.hpp"
#include "model/model.hpp"
#include "model/optimizer.hpp"
#include "model/saving.hpp"
#include "model/schedules.hpp"
#include "model/sequential.hpp"
#include "strategy/gpu_strategies.hpp"
#include "strategy/strategy.hpp"
