"""Run cloud-init's own ``phone_home`` module once, the way ``cloud-final`` runs it.

Run with the interpreter that has Debian's ``cloudinit`` package (``/usr/bin/python3``), not
the project's venv::

    /usr/bin/python3 tests/clients/cloudinit_phone_home.py --url URL --keys-dir DIR \
        --work-dir DIR --instance-id ID --local-hostname HOST.DOMAIN

What is real: the ``cc_phone_home.handle`` function, the ``Cloud`` object it is given, a
NoCloud datasource that reads ``instance-id`` and ``local-hostname`` from its meta-data, and
cloud-init's URL helper that posts the form. What is not: the host keys are read from
``--keys-dir`` instead of ``/etc/ssh`` (the test must not touch the machine it runs on),
and cloud-init's state lives under ``--work-dir`` instead of ``/var/lib/cloud``.

Exits 0 when the server answered 2xx, 1 when cloud-init gave up (it only logs failures).
"""

import argparse
import inspect
import logging
import os
import sys

from cloudinit import distros
from cloudinit import helpers
from cloudinit import url_helper
from cloudinit import util
from cloudinit.cloud import Cloud
from cloudinit.config import cc_phone_home
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud

HOST_KEYS_DIR = "/etc/ssh/"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the phone_home url (may use $INSTANCE_ID)")
    parser.add_argument("--keys-dir", required=True, help="holds ssh_host_*_key.pub")
    parser.add_argument("--work-dir", required=True, help="cloud-init's cloud_dir and run_dir")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--local-hostname", required=True, help="e.g. node-1.lab.example")
    parser.add_argument("--tries", type=int, default=2)
    return parser.parse_args(argv)


def redirect_host_keys(keys_dir: str) -> None:
    """Make cloud-init's ``util.load_file`` read ``/etc/ssh/*`` from ``keys_dir``."""
    load_file = util.load_file

    def load_file_from_keys_dir(path, *args, **kwargs):
        if str(path).startswith(HOST_KEYS_DIR):
            path = os.path.join(keys_dir, os.path.basename(path))
        return load_file(path, *args, **kwargs)

    util.load_file = load_file_from_keys_dir


def record_responses() -> list:
    """Keep every response ``readurl`` returns, so the exit code can tell success."""
    responses = []
    readurl = url_helper.readurl

    def recording_readurl(*args, **kwargs):
        response = readurl(*args, **kwargs)
        responses.append(response)
        return response

    url_helper.readurl = recording_readurl
    return responses


def build_cloud(args: argparse.Namespace) -> Cloud:
    """A ``Cloud`` over a NoCloud datasource whose meta-data comes from its config."""
    paths = helpers.Paths(
        {
            "cloud_dir": os.path.join(args.work_dir, "cloud"),
            "run_dir": os.path.join(args.work_dir, "run"),
        }
    )
    meta_data = {"instance-id": args.instance_id, "local-hostname": args.local_hostname}
    system_config = {
        "datasource": {
            # fs_label None: do not probe the host's block devices for a cidata disk.
            "NoCloud": {"fs_label": None, "meta-data": meta_data, "user-data": ""},
        },
    }
    distro = distros.fetch("debian")("debian", {}, paths)
    datasource = DataSourceNoCloud(system_config, distro, paths)
    if not datasource.get_data():
        raise SystemExit("the NoCloud datasource found no data")
    return Cloud(datasource, paths, system_config, distro, helpers.Runners(paths))


def run_phone_home(cloud: Cloud, config: dict, log: logging.Logger) -> None:
    """Call ``handle`` with the arguments this cloud-init version expects.

    Up to 22.x it takes ``(name, cfg, cloud, log, args)``; from 23.x ``(name, cfg, cloud, args)``.
    """
    if "log" in inspect.signature(cc_phone_home.handle).parameters:
        cc_phone_home.handle("phone_home", config, cloud, log, [])
    else:
        cc_phone_home.handle("phone_home", config, cloud, [])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True)
    log = logging.getLogger("cloudinit.config.cc_phone_home")
    redirect_host_keys(args.keys_dir)
    responses = record_responses()
    config = {"phone_home": {"url": args.url, "post": "all", "tries": args.tries}}
    run_phone_home(build_cloud(args), config, log)
    delivered = [response for response in responses if response.ok()]
    print(f"phone_home: {len(delivered)} delivered", file=sys.stderr)
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
