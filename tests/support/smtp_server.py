#!/usr/bin/env python3
"""A real SMTP server for herald's tests (aiosmtpd), listening on 127.0.0.1.

Started by `herald_testkit::smtp::SmtpServer`; usable by hand too:

    python3 tests/support/smtp_server.py --maildir /tmp/mail [--starttls CERT KEY]
        [--tls CERT KEY] [--fail-first N [--fail-on data|rcpt]] [--reject-rcpt PATTERN]
        [--auth USER:PASS]
        [--discard] [--exit-on-stdin-eof]

The first line on stdout is `PORT <n>` (an ephemeral port), printed once the server
listens. Each accepted message is written to the maildir as `NNNNNN.eml` (the DATA bytes
exactly as received) next to `NNNNNN.envelope` (`MAIL FROM:<…>` then one `RCPT TO:<…>` line
per recipient); the `.eml` appears last and atomically, so a reader that sees it sees both.

Options:
  --starttls CERT KEY  offer STARTTLS with this PEM certificate and key, and require it
                       before MAIL (530 otherwise)
  --tls CERT KEY       implicit TLS (SMTPS): TLS from the first byte
  --fail-first N       answer `451 4.3.0 try again later` to the first N DATA commands
                       (or RCPT commands with --fail-on rcpt)
  --reject-rcpt PAT    answer `550 5.1.1 …` to recipients matching the shell-style,
                       case-insensitive PATTERN (e.g. `*@rejected.example`)
  --auth USER:PASS     require AUTH (PLAIN/LOGIN) with these credentials
  --discard            count messages but write nothing (benchmarks)
  --exit-on-stdin-eof  exit when stdin closes, so a crashed parent leaves no server behind

aiosmtpd's `Controller(port=0)` cannot report the port it bound, so the server is created
with `loop.create_server` directly.
"""

import argparse
import asyncio
import fnmatch
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

TRY_AGAIN = "451 4.3.0 try again later"


class Handler:
    def __init__(self, args):
        self.maildir = args.maildir
        self.fail_left = args.fail_first
        self.fail_on = args.fail_on
        self.reject = args.reject_rcpt.lower() if args.reject_rcpt else None
        self.discard = args.discard
        self.count = 0

    def _fail_now(self, stage):
        if self.fail_on == stage and self.fail_left > 0:
            self.fail_left -= 1
            return True
        return False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject and fnmatch.fnmatchcase(address.lower(), self.reject):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self._fail_now("rcpt"):
            return TRY_AGAIN
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self._fail_now("data"):
            return TRY_AGAIN
        self.count += 1
        seq = self.count
        if not self.discard:
            base = os.path.join(self.maildir, f"{seq:06d}")
            lines = [f"MAIL FROM:<{envelope.mail_from}>"]
            lines += [f"RCPT TO:<{rcpt}>" for rcpt in envelope.rcpt_tos]
            with open(base + ".envelope", "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            content = envelope.original_content or envelope.content
            if isinstance(content, str):
                content = content.encode("utf-8", "surrogateescape")
            with open(base + ".eml.tmp", "wb") as f:
                f.write(content)
            os.replace(base + ".eml.tmp", base + ".eml")
        return f"250 2.0.0 OK queued as {seq:06d}"


def make_authenticator(user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # handled=False: aiosmtpd then answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False)

    return authenticator


def parse_args(argv):
    p = argparse.ArgumentParser(description="aiosmtpd-based SMTP server for herald's tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--maildir", required=True)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--fail-first", type=int, default=0, metavar="N")
    p.add_argument("--fail-on", choices=("data", "rcpt"), default="data")
    p.add_argument("--reject-rcpt", metavar="PATTERN")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--discard", action="store_true")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    os.makedirs(args.maildir, exist_ok=True)
    handler = Handler(args)

    options = {
        # A fixed name: the default asks the resolver for the FQDN, which can be slow.
        "hostname": "herald-test-smtp",
        "data_size_limit": 32 * 1024 * 1024,
    }
    if args.starttls and args.tls:
        sys.exit("--starttls and --tls exclude each other")
    if args.starttls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.starttls[0], args.starttls[1])
        options.update(tls_context=context, require_starttls=True)
    implicit = None
    if args.tls:
        implicit = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        implicit.load_cert_chain(args.tls[0], args.tls[1])
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep:
            sys.exit("--auth wants USER:PASS")
        options.update(
            authenticator=make_authenticator(user, password),
            auth_required=True,
            auth_require_tls=bool(args.starttls or args.tls),
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, loop=loop, **options), args.host, 0, ssl=implicit
        )
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    stop = loop.stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if args.exit_on_stdin_eof:

        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop)

        threading.Thread(target=watch_stdin, daemon=True).start()

    try:
        loop.run_forever()
    finally:
        server.close()
        print(f"accepted {handler.count} messages", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
