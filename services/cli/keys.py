"""`leyline keys`: create and inspect the CURVE key pairs and the trust directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bus.security import (
    Role,
    SecurityError,
    TrustStore,
    ensure_keys,
    generate_key,
    read_certificate,
    secret_key_path,
    trust_dir,
)
from services.stack import stack_identities

DEFAULT_DIR = "leyline-data/keys"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="create and inspect CURVE keys")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    generate = verbs.add_parser("generate", help="a new key pair for one identity")
    generate.add_argument("identity", help="the identity the key stands for (w1, controller...)")
    generate.add_argument("--role", required=True, choices=[r.value for r in Role])
    generate.set_defaults(handler=_generate)

    init = verbs.add_parser("init", help="every key a local stack needs, where missing")
    init.add_argument("--workers", type=int, default=2, help="workers w1..wN (default 2)")
    init.set_defaults(handler=_init)

    listing = verbs.add_parser("list", help="the trusted identities, roles and public keys")
    listing.set_defaults(handler=_list)

    show = verbs.add_parser("show", help="one key: identity, role, public key, files")
    show.add_argument("identity", help="an identity in the key directory, or a certificate file")
    show.set_defaults(handler=_show)

    for verb in (generate, init, listing, show):
        verb.add_argument("--dir", default=DEFAULT_DIR, help=f"key directory ({DEFAULT_DIR})")


def _fail(error: SecurityError) -> int:
    print(f"leyline keys: {error}", file=sys.stderr)
    return 2


def _generate(args: argparse.Namespace) -> int:
    try:
        keys = generate_key(args.dir, args.identity, Role(args.role))
    except SecurityError as error:
        return _fail(error)
    print(f"{keys.identity} ({keys.role.value}) {keys.public_key.decode()}")
    print(f"  public: {trust_dir(args.dir) / (keys.identity + '.key')}")
    print(f"  secret: {secret_key_path(args.dir, keys.identity)}")
    return 0


def _init(args: argparse.Namespace) -> int:
    try:
        created = ensure_keys(args.dir, stack_identities(args.workers))
    except SecurityError as error:
        return _fail(error)
    print(f"created {', '.join(created)}" if created else "every key already exists")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        peers = TrustStore(trust_dir(args.dir)).peers()
    except SecurityError as error:
        return _fail(error)
    print(f"{'identity':16s} {'role':10s} public key")
    for peer in peers:
        print(f"{peer.identity:16s} {peer.role.value:10s} {peer.public_key.decode()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    candidates = [
        Path(args.identity),
        secret_key_path(args.dir, args.identity),
        trust_dir(args.dir) / f"{args.identity}.key",
    ]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return _fail(SecurityError(f"no key for {args.identity!r} in {args.dir}"))
    try:
        peer = read_certificate(path)
    except SecurityError as error:
        return _fail(error)
    secret = path if path.suffix == ".key_secret" else "not in this key directory"
    print(f"identity:   {peer.identity}")
    print(f"role:       {peer.role.value}")
    print(f"public key: {peer.public_key.decode()}")
    print(f"file:       {path}")
    print(f"secret:     {secret}")
    return 0
