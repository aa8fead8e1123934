#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pbxwall contributors. MIT OR Apache-2.0.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pbxwall_account
short_description: Manage a pbxwall account (who may reach which services of a PBX)
description:
  - Creates, changes or removes one account of pbxwall, the nftables whitelist firewall for
    VoIP PBXes, through pbxwall's own commands (C(add-ip), C(add-fqdn), C(del-acct), each
    run with C(--json)), then applies the ruleset as they do (unless I(restart=false)).
  - Idempotent. The wanted account is first written by C(pbxwall add-ip)/C(add-fqdn
    --no-restart) into a temporary folder, so pbxwall itself checks and normalises it
    (service codes become names, addresses are written as pbxwall writes them); C(pbxwall
    list --json) of that folder is then compared with C(pbxwall list --json) of the real
    one (services, addresses, host names, comment). Nothing is run when they are equal.
  - Supports check mode and diff mode (the account file before and after).
  - An account that comes from a fleet bundle (C(pbxwall sync)) is not a local file; this
    module manages local accounts only. A local account overrides a fleet account of the
    same name; C(state=absent) of a fleet-only account fails with pbxwall's explanation.
options:
  name:
    description: Account name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -).
    type: str
    required: true
  state:
    description: Whether the account exists.
    type: str
    choices: [present, absent]
    default: present
  addresses:
    description: IPv4/IPv6 addresses or CIDRs (C(add-ip)). Give addresses or fqdns.
    type: list
    elements: str
  fqdns:
    description: Host names (C(add-fqdn)). Give addresses or fqdns.
    type: list
    elements: str
  services:
    description: Profile names or TM3 codes (sip-udp, iax, ssh, 0 = all, ...). Required with state=present.
    type: list
    elements: str
  comment:
    description: A comment stored with the account.
    type: str
  restart:
    description: Apply the ruleset after the change (false passes C(--no-restart)).
    type: bool
    default: true
  force:
    description: Pass C(--force) (very large ranges; names that do not exist; skip the SSH lockout guard).
    type: bool
    default: false
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
- name: Joe's office may register and use IAX
  pbxwall.pbxwall.pbxwall_account:
    name: joe-office
    addresses: [203.0.113.7, "2001:db8::/48"]
    services: [sip-udp, iax]
    comment: Joe's office

- name: A softphone behind dynamic DNS
  pbxwall.pbxwall.pbxwall_account:
    name: joe-mobile
    fqdns: [joe.dyndns.example]
    services: [1, 3]

- name: Gone
  pbxwall.pbxwall.pbxwall_account:
    name: old-site
    state: absent
"""

RETURN = r"""
account:
  description: The account as pbxwall writes it (null when absent).
  returned: always
  type: dict
messages:
  description: pbxwall's result lines (from its --json report).
  returned: when a command ran
  type: list
pbxwall:
  description: pbxwall's whole --json report of the command that ran.
  returned: when a command ran
  type: dict
"""

import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pbxwall.pbxwall.plugins.module_utils.pbxwall import (
    COMMON_ARGS,
    fail_from_report,
    folders,
    run_json,
)

CREATED = re.compile(r"^created\s*=.*\n?", re.MULTILINE)
# What the module manages of a `pbxwall list --json` row.
COMPARED = ("services", "addresses", "fqdns", "comment", "expires")


def read(path):
    try:
        with open(path, "r") as f:
            return f.read()
    except IOError:
        return None


def without_created(text):
    return CREATED.sub("", text) if text is not None else None


def listed(module, name, config_dir=None, state_dir=None):
    """Account NAME as `pbxwall list --json` shows it (None when there is none)."""
    rc, report, err = run_json(module, ["list"], config_dir=config_dir, state_dir=state_dir)
    if rc not in (0, 3) or "accounts" not in report:
        fail_from_report(module, "pbxwall list", rc, report, err)
    for row in report["accounts"]:
        if row.get("name") == name:
            return row
    return None


def compared(row):
    """The part of a list row this module manages."""
    if row is None:
        return None
    return dict((k, row.get(k)) for k in COMPARED)


def is_fleet(row):
    return row is not None and str(row.get("origin") or "").startswith("fleet:")


def wanted(module, command, values):
    """The wanted account as pbxwall writes it (file text) and lists it (row), made in a
    temporary folder (with the local profiles), so pbxwall checks and normalises it."""
    config_dir, _ = folders(module)
    p = module.params
    tmp = tempfile.mkdtemp(prefix="pbxwall-ansible-")
    try:
        tconfig = os.path.join(tmp, "config")
        tstate = os.path.join(tmp, "state")
        os.makedirs(tstate)
        os.makedirs(tconfig)
        profiles = os.path.join(config_dir, "profiles")
        if os.path.isdir(profiles):
            shutil.copytree(profiles, os.path.join(tconfig, "profiles"))
        args = [command, p["name"]] + values + ["--allow", ",".join(p["services"])]
        if p["comment"] is not None:
            args += ["--comment", p["comment"]]
        if p["force"] and command == "add-ip":
            args.append("--force")
        args.append("--no-restart")
        rc, report, err = run_json(module, args, config_dir=tconfig, state_dir=tstate)
        if rc != 0:
            fail_from_report(module, "invalid account %s" % p["name"], rc, report, err)
        text = read(os.path.join(tconfig, "accounts", p["name"] + ".toml"))
        row = listed(module, p["name"], config_dir=tconfig, state_dir=tstate)
        if text is None or row is None:
            module.fail_json(msg="pbxwall %s wrote no account" % command, pbxwall=report)
        return text, row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        addresses=dict(type="list", elements="str"),
        fqdns=dict(type="list", elements="str"),
        services=dict(type="list", elements="str"),
        comment=dict(type="str"),
        restart=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("addresses", "fqdns")],
        required_if=[("state", "present", ("services",))],
    )
    p = module.params
    config_dir, _ = folders(module)
    path = os.path.join(config_dir, "accounts", p["name"] + ".toml")
    if "/" in p["name"] or p["name"].startswith("."):
        module.fail_json(msg="invalid account name %r" % p["name"])
    old = read(path)
    current = listed(module, p["name"])
    result = dict(changed=False, account=None)

    if p["state"] == "absent":
        if old is None:
            if is_fleet(current):
                module.warn(
                    "account %s comes from the fleet bundle, not a local file: remove it from the bundle"
                    % p["name"]
                )
            module.exit_json(**result)
        result["changed"] = True
        if module._diff:
            result["diff"] = dict(
                before=without_created(old), after="", before_header=path, after_header=path
            )
        if not module.check_mode:
            args = ["del-acct", p["name"]]
            if not p["restart"]:
                args.append("--no-restart")
            if p["force"]:
                args.append("--force")
            rc, report, err = run_json(module, args)
            if rc not in (0, 3):
                fail_from_report(module, "del-acct %s" % p["name"], rc, report, err)
            result.update(pbxwall=report, messages=report.get("messages", []))
            for w in report.get("warnings", []):
                module.warn(w)
        module.exit_json(**result)

    values = p["addresses"] or p["fqdns"]
    if not values:
        module.fail_json(msg="state=present needs addresses or fqdns")
    command = "add-ip" if p["addresses"] else "add-fqdn"
    if is_fleet(current):
        # A fleet account is no local file: a local one of the same name overrides it.
        current = None
    new, row = wanted(module, command, values)
    result["account"] = compared(row)
    if compared(current) == compared(row):
        module.exit_json(**result)
    result["changed"] = True
    if module._diff:
        result["diff"] = dict(
            before=without_created(old) or "",
            after=without_created(new),
            before_header=path,
            after_header=path,
        )
    if not module.check_mode:
        args = [command, p["name"]] + values + ["--allow", ",".join(p["services"])]
        if p["comment"] is not None:
            args += ["--comment", p["comment"]]
        if old is not None:
            args.append("--replace")
        if not p["restart"]:
            args.append("--no-restart")
        if p["force"]:
            args.append("--force")
        rc, report, err = run_json(module, args)
        # 3: saved and applied, but degraded (a name left out, say): pbxwall says why.
        if rc not in (0, 3):
            fail_from_report(module, "%s %s" % (command, p["name"]), rc, report, err)
        result.update(pbxwall=report, messages=report.get("messages", []))
        for w in report.get("warnings", []):
            module.warn(w)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
