# -*- coding: utf-8 -*-
# Shared by the pbxwall modules: where pbxwall's folders are, and running its commands with
# --json (every pbxwall command prints one JSON report with --json: command, exit, outcome,
# error, messages, warnings, applied).
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

DEFAULT_CONFIG_DIR = "/etc/pbxwall"
DEFAULT_STATE_DIR = "/var/lib/pbxwall"

COMMON_ARGS = dict(
    config_dir=dict(type="path"),
    state_dir=dict(type="path"),
    pbxwall=dict(type="path"),
)


def folders(module):
    """The configuration and state folders: the module's options, else pbxwall's own
    environment variables, else pbxwall's defaults."""
    config = module.params.get("config_dir") or os.environ.get(
        "PBXWALL_CONFIG_DIR", DEFAULT_CONFIG_DIR
    )
    state = module.params.get("state_dir") or os.environ.get(
        "PBXWALL_STATE_DIR", DEFAULT_STATE_DIR
    )
    return config, state


def binary(module):
    """The pbxwall program: the `pbxwall` option, else `pbxwall` on PATH (or /usr/sbin)."""
    if module.params.get("pbxwall"):
        return module.params["pbxwall"]
    return module.get_bin_path("pbxwall", required=True, opt_dirs=["/usr/sbin", "/usr/local/sbin"])


def run_json(module, args, config_dir=None, state_dir=None):
    """Runs `pbxwall --json ARGS` with the folders; returns (rc, report dict, stderr)."""
    config, state = folders(module)
    cmd = [
        binary(module),
        "--config-dir",
        config_dir or config,
        "--state-dir",
        state_dir or state,
        "--json",
    ] + list(args)
    # SSH_* would make pbxwall's lockout guard look at the controller's session through
    # sudo; the guard is kept: pbxwall sees its own session as it should.
    rc, out, err = module.run_command(cmd)
    try:
        report = json.loads(out) if out.strip() else {}
    except ValueError:
        report = {"error": out.strip()}
    return rc, report, err


def fail_from_report(module, what, rc, report, err, **extra):
    """Fails the task with pbxwall's own error line."""
    msg = report.get("error") or err.strip() or "exit %d" % rc
    module.fail_json(
        msg="%s: %s" % (what, msg),
        rc=rc,
        pbxwall=report,
        stderr=err,
        **extra
    )
