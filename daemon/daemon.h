// Daemon: connmgrd's process: builds the parts (Store, connectors, manager,
// API, dispatcher, socket server, network watch) on one libuv loop, serves
// until SIGTERM or SIGINT, re-reads its configuration on SIGHUP, and takes
// everything down in order (links closed so peers see EOF, statistics
// flushed).
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace connmgr::daemon {

// Runs the daemon to completion; returns the process exit status (0 after a
// clean stop, 1 when it could not start, 2 for a configuration it refuses
// at start: an inventory_dsn that holds a password).
int run(const std::vector<std::string>& args, const config::Environment& env,
        const config::DaemonConfig& config);

}  // namespace connmgr::daemon
