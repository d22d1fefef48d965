// Mirror: data-parallel training on every GPU of a workstation (or the CPU), with a Keras-like API.
// The one header a user includes.
#pragma once

#include "mirror/engine/activation.hpp"
#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/device.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/gpu_runtime.hpp"
#include "mirror/engine/shape.hpp"
#include "mirror/engine/verbosity.hpp"
#include "mirror/model/applications.hpp"
#include "mirror/model/callbacks.hpp"
#include "mirror/model/graph.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/losses.hpp"
#include "mirror/model/model.hpp"
#include "mirror/model/optimizer.hpp"
#include "mirror/model/saving.hpp"
#include "mirror/model/schedules.hpp"
#include "mirror/model/sequential.hpp"
#include "mirror/strategy/gpu_strategies.hpp"
#include "mirror/strategy/strategy.hpp"
