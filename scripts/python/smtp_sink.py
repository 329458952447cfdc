"""An SMTP sink for warden's notification tests (aiosmtpd).

Listens on 127.0.0.1:PORT, prints READY once it accepts connections, then one JSON line per
message received: {"mail_from", "rcpt_tos", "data", "subject", "from", "to", "body" (decoded),
"auth_login", "tls"}. With --tls-cert and
--tls-key it offers STARTTLS and requires it; with --auth USER:PASSWORD it requires SMTP AUTH
(over TLS when TLS is on). Exits when its stdin closes (the test that started it ended).
"""

import argparse
import email
import email.policy
import json
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    async def handle_DATA(self, server, session, envelope):
        auth = session.auth_data
        login = auth.login if isinstance(auth, LoginPassword) else None
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(("plain",))
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                    "subject": str(message["subject"]),
                    "from": str(message["from"]),
                    "to": str(message["to"]),
                    "body": body.get_content() if body is not None else None,
                    "auth_login": login.decode() if isinstance(login, bytes) else login,
                    "tls": session.ssl is not None,
                }
            ),
            flush=True,
        )
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth", help="USER:PASSWORD")
    args = parser.parse_args()

    kwargs = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs.update(tls_context=context, require_starttls=True)
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs.update(
            authenticator=authenticator(user, password),
            auth_required=True,
            auth_require_tls=bool(args.tls_cert),
        )
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
