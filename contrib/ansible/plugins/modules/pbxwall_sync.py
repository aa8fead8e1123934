#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pbxwall contributors. MIT OR Apache-2.0.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pbxwall_sync
short_description: Point a PBX at a signed pbxwall fleet bundle (the [sync] settings)
description:
  - Writes the C([sync]) table of C(CONFIG_DIR/pbxwall.toml) and leaves the rest of the file
    as it is (the table is moved to the end of the file the first time).
  - The new settings are checked by pbxwall itself (C(pbxwall restart --dry-run) on a copy in
    a temporary folder) before the file is written; the write is atomic.
  - Idempotent; supports check mode and diff mode. With I(sync=true) it then runs
    C(pbxwall sync --json) (only when something changed, or always with I(sync=always)).
options:
  state:
    description: C(absent) removes the [sync] table (the stored bundle stays in force until
      the next restart reads it; remove CONFIG_DIR/fleet/ to drop it).
    type: str
    choices: [present, absent]
    default: present
  url:
    description: https://, http:// or file:// URL of the bundle; the signature is at url + .minisig.
    type: str
  public_key:
    description: The minisign public key (the base64 line of the .pub file).
    type: str
  next_public_key:
    description: A second key accepted during a key rotation.
    type: str
  ca_file:
    description: PEM file of the only CAs trusted for https (default the system's store).
    type: path
  timeout:
    description: Time limit of each download (90s, 2m, ...).
    type: str
  max_bytes:
    description: Largest bundle downloaded.
    type: int
  sync:
    description: Run C(pbxwall sync) after a change (C(true)), always (C(always)) or never (C(false)).
    type: str
    choices: ["true", "false", "always"]
    default: "false"
  config_dir:
    description: pbxwall's configuration folder. Default C(PBXWALL_CONFIG_DIR), else /etc/pbxwall.
    type: path
  state_dir:
    description: pbxwall's state folder. Default C(PBXWALL_STATE_DIR), else /var/lib/pbxwall.
    type: path
  pbxwall:
    description: Path of the pbxwall program. Default C(pbxwall) on PATH or in /usr/sbin.
    type: path
"""

EXAMPLES = r"""
- name: Pull the fleet's accounts
  pbxwall.pbxwall.pbxwall_sync:
    url: https://fleet.example/accounts.bundle
    public_key: RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3
    sync: "true"
"""

RETURN = r"""
settings:
  description: The [sync] table as written.
  returned: always
  type: str
pbxwall:
  description: pbxwall sync's --json report, when it ran.
  returned: when sync ran
  type: dict
"""

import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pbxwall.pbxwall.plugins.module_utils.pbxwall import (
    COMMON_ARGS,
    binary,
    fail_from_report,
    folders,
    run_json,
)

HEADER = re.compile(r"^\s*\[")
SYNC_HEADER = re.compile(r"^\s*\[\s*sync\s*\]\s*(#.*)?$")


def without_sync(text):
    """The settings text without its [sync] table."""
    out = []
    skipping = False
    for line in text.splitlines(True):
        if SYNC_HEADER.match(line):
            skipping = True
            continue
        if skipping and HEADER.match(line):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out).rstrip("\n")


def toml_string(value):
    # A JSON string of printable text is a valid TOML basic string.
    return json.dumps(value)


def sync_table(p):
    lines = ["[sync]"]
    for key in ("url", "public_key", "next_public_key", "ca_file", "timeout"):
        if p[key] is not None:
            lines.append("%s = %s" % (key, toml_string(p[key])))
    if p["max_bytes"] is not None:
        lines.append("max_bytes = %d" % p["max_bytes"])
    return "\n".join(lines) + "\n"


def check_settings(module, config_dir, text):
    """Lets pbxwall parse the new settings (restart --dry-run on a copy)."""
    tmp = tempfile.mkdtemp(prefix="pbxwall-ansible-")
    try:
        tconfig = os.path.join(tmp, "config")
        os.makedirs(tconfig)
        profiles = os.path.join(config_dir, "profiles")
        if os.path.isdir(profiles):
            shutil.copytree(profiles, os.path.join(tconfig, "profiles"))
        with open(os.path.join(tconfig, "pbxwall.toml"), "w") as f:
            f.write(text)
        cmd = [binary(module), "--config-dir", tconfig, "--state-dir",
               os.path.join(tmp, "state"), "restart", "--dry-run"]
        rc, _, err = module.run_command(cmd)
        if rc not in (0, 3):
            module.fail_json(msg="pbxwall refuses these settings: %s" % err.strip(), rc=rc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    argument_spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        url=dict(type="str"),
        public_key=dict(type="str", no_log=False),
        next_public_key=dict(type="str", no_log=False),
        ca_file=dict(type="path"),
        timeout=dict(type="str"),
        max_bytes=dict(type="int"),
        sync=dict(type="str", choices=["true", "false", "always"], default="false"),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ("url", "public_key"))],
    )
    p = module.params
    config_dir, _ = folders(module)
    path = os.path.join(config_dir, "pbxwall.toml")
    try:
        with open(path) as f:
            old = f.read()
    except IOError:
        old = ""
    rest = without_sync(old)
    if p["state"] == "present":
        table = sync_table(p)
        new = (rest + "\n\n" if rest else "") + table
    else:
        table = ""
        new = rest + "\n" if rest else ""
    changed = new != old
    result = dict(changed=changed, settings=table)
    if changed and module._diff:
        result["diff"] = dict(before=old, after=new, before_header=path, after_header=path)
    if changed and not module.check_mode:
        check_settings(module, config_dir, new)
        if not os.path.isdir(config_dir):
            os.makedirs(config_dir, 0o755)
        fd, tmp = tempfile.mkstemp(dir=config_dir, prefix=".pbxwall.toml.")
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    run = p["sync"] == "always" or (p["sync"] == "true" and changed)
    if run and p["state"] == "present" and not module.check_mode:
        rc, report, err = run_json(module, ["sync"])
        result["pbxwall"] = report
        if rc != 0:
            fail_from_report(module, "pbxwall sync", rc, report, err, settings=table)
        result["changed"] = result["changed"] or any(
            "fleet bundle serial" in m for m in report.get("messages", [])
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
