"""Email through Django's email machinery: the platform mailer (``EMAIL_*`` settings) or the
brand's own SMTP relay, one reused connection per worker task.

Each message is built by ``EmailMultiAlternatives`` (text and HTML parts, ``Message-ID``,
``List-Unsubscribe`` with RFC 8058 one-click, ``Reply-To``), DKIM-signed (dkimpy) when its From
domain is a verified domain of the brand with a key, and sent over SMTP with its own VERP
envelope sender. Outcomes per message, read from the server's replies:

- 250 after DATA: accepted. The journal (Redis in production, else the cache) holds one entry
  per message handed over, in two states. *Pending* is written just before the terminating dot
  is sent, the moment the server may commit the message; *confirmed* once its 250 is read,
  written in the same round trip as the next message's pending entry (a Redis pipeline), and
  at the end of the window or when the connection closes. Reconciliation of a dead worker's
  rows (``find_handed_over``) takes a confirmed entry as Sent, a pending one as in doubt (the
  row Failed "it may have been delivered; not sent again", never resent), and no entry as
  never handed over (sent again). A refusal removes the entry. (Written only after the reply,
  a kill between the server's 250 and the record would send the message twice; taking a
  pending entry as Sent, a kill between the entry and the dot would lose the message.)
- 5xx at RCPT or DATA: Bounced (at RCPT with "no such user" codes the address is suppressed);
- 4xx anywhere, a refused or dropped connection before DATA: retried (nothing was accepted);
- no answer after the message was transmitted: Failed, not resent (it may have been accepted);
- login refused, or 5xx to MAIL FROM: the relay refuses the account, the distribution stops.

With another backend (the file-based development default, ``locmem`` in tests) messages go
through ``send_messages`` and are accepted as the backend says (journalled the same way:
pending before ``send_messages``, confirmed after).
"""

from __future__ import annotations

import logging
import re
import secrets
import smtplib
import socket
from datetime import datetime
from email.utils import formataddr

from django.conf import settings
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

import dkim

from distributions.models import EmailDomain
from distributions.providers.base import (
    EmailProvider,
    HandedOver,
    Outcome,
    OutgoingEmail,
    ProviderError,
    SendResult,
    SentQuery,
)

logger = logging.getLogger(__name__)

JOURNAL_PREFIX = "relay:email:accepted:"
JOURNAL_SECONDS = 7 * 24 * 3600  # longer than any lease: reconciliation reads it
# A journal entry's value: its state, then the Message-ID.
PENDING = "pending:"  # handed over (written before the terminating dot), no 250 recorded yet
CONFIRMED = "sent:"  # the server answered 250
DKIM_HEADERS = [
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"Reply-To",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"MIME-Version",
    b"Content-Type",
]
# RCPT refusals that mean "this mailbox does not exist": the address is suppressed.
SUPPRESS_CODES = {550, 551, 553}
DOT_AT_LINE_START = re.compile(rb"(?m)^\.")  # doubled in DATA (RFC 5321 4.5.2)


_redis = None


def _redis_client():
    """A plain Redis client for the journal (``REDIS_URL``), or None: then the cache."""
    global _redis
    if _redis is None and settings.REDIS_URL:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


def _journal_key(lease: str, message_id: int) -> str:
    # Keyed by the lease too: a row id alone could match another database's journal.
    return f"{JOURNAL_PREFIX}{lease}:{message_id}"


def _reply(code: int, text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(str(text).split())}".strip()[:280]


class SmtpEmailProvider(EmailProvider):
    code = "email"
    label = "Email (platform mailer or own SMTP relay)"
    channels = ("email",)

    def __init__(self, account):
        super().__init__(account)
        self.backend = None
        self._dkim: dict[str, tuple[bytes, bytes] | None] = {}
        # Journal keys of messages accepted (250) whose confirmation is not written yet.
        self._confirmations: list[tuple[str, str]] = []

    # --- connection ---------------------------------------------------------------------
    def _make_backend(self):
        account = self.account
        if account.transport == "smtp":
            return SmtpBackend(
                host=account.smtp_host,
                port=account.smtp_port,
                username=account.smtp_username or None,
                password=account.smtp_password or None,
                use_tls=account.smtp_security == "starttls",
                use_ssl=account.smtp_security == "ssl",
                timeout=settings.EMAIL_TIMEOUT,
                fail_silently=False,
            )
        return get_connection(fail_silently=False)

    def _open(self) -> tuple[Outcome, str] | None:
        """Open (or keep) the connection. None when usable, else why not."""
        if self.backend is None:
            self.backend = self._make_backend()
        try:
            opened = self.backend.open()
            smtp = getattr(self.backend, "connection", None)
            if isinstance(self.backend, SmtpBackend) and smtp is not None:
                smtp.ehlo_or_helo_if_needed()  # open() greets only for STARTTLS or a login
                if opened and smtp.sock is not None:
                    # The terminating dot goes in a packet of its own after the journal write
                    # (``_data``): without this, Nagle's algorithm holds it until the server's
                    # delayed ACK of the content, 40 ms per message.
                    smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            return Outcome.FATAL, "login refused: " + _reply(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            self.close()
            outcome = Outcome.FATAL if 500 <= exc.smtp_code < 600 else Outcome.RETRY
            return outcome, _reply(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            return Outcome.RETRY, f"cannot reach the mail server: {exc}"[:280]
        return None

    def close(self) -> None:
        self._journal_flush()
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                logger.debug("closing the SMTP connection failed", exc_info=True)
            if isinstance(self.backend, SmtpBackend):
                self.backend.connection = None

    # --- messages -----------------------------------------------------------------------
    def _dkim_for(self, domain: str) -> tuple[bytes, bytes] | None:
        if domain not in self._dkim:
            row = EmailDomain.objects.filter(
                brand_id=self.account.brand_id, domain=domain, verified_at__isnull=False
            ).first()
            self._dkim[domain] = (
                (row.dkim_selector.encode(), row.dkim_private_key.encode())
                if row is not None and row.has_dkim
                else None
            )
        return self._dkim[domain]

    def build(self, message: OutgoingEmail) -> tuple[str, EmailMultiAlternatives]:
        domain = message.from_address.rpartition("@")[2].lower()
        message_id = f"{message.message_id}.{secrets.token_hex(8)}@{domain}"
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=formataddr((message.from_name, message.from_address))
            if message.from_name
            else message.from_address,
            to=[message.to],
            reply_to=[message.reply_to] if message.reply_to else None,
            headers={
                "Message-ID": f"<{message_id}>",
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            connection=self.backend,
        )
        email.attach_alternative(message.html, "text/html")
        return message_id, email

    def signed_bytes(self, message: OutgoingEmail, email: EmailMultiAlternatives) -> bytes:
        mime = email.message()
        # A random boundary of our own: the generator would otherwise compile a new regular
        # expression per message to check its own guess against the text (a third of the cost
        # of building a message).
        mime.set_boundary(f"=_relay_{secrets.token_hex(16)}")
        data = mime.as_bytes(linesep="\r\n")
        domain = message.from_address.rpartition("@")[2].lower()
        key = self._dkim_for(domain)
        if key is not None:
            selector, private_key = key
            data = (
                dkim.sign(
                    data,
                    selector,
                    domain.encode(),
                    private_key,
                    include_headers=DKIM_HEADERS,
                    linesep=b"\r\n",
                )
                + data
            )
        return data

    def send_window(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        try:
            return self._send_messages(messages)
        finally:
            self._journal_flush()  # the last 250s of the window, before the results go back

    def _send_messages(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        for index, message in enumerate(messages):
            problem = self._open()
            if problem is not None:
                outcome, reason = problem
                results += [
                    SendResult(
                        message_id=m.message_id,
                        outcome=outcome,
                        error_code="smtp",
                        error_message=reason,
                    )
                    for m in messages[index:]
                ]
                return results
            results.append(self._send_one(message))
        return results

    def _send_one(self, message: OutgoingEmail) -> SendResult:
        message_id, email = self.build(message)
        smtp = getattr(self.backend, "connection", None)
        if not isinstance(self.backend, SmtpBackend) or smtp is None:
            self._journal_pending(message, message_id)
            try:
                self.backend.send_messages([email])
            except Exception:
                self._unjournal(message)  # the backend refused it: nothing was handed over
                raise
            self._journal_confirm(message, message_id)
            return SendResult(message.message_id, Outcome.ACCEPTED, provider_id=message_id)
        data = self.signed_bytes(message, email)
        try:
            code, text = smtp.mail(message.return_path)
            if code != 250:
                return self._refused(smtp, message, code, text, stage="MAIL")
            code, text = smtp.rcpt(message.to)
            if code not in (250, 251):
                return self._refused(smtp, message, code, text, stage="RCPT")
        except (smtplib.SMTPException, OSError) as exc:
            self.close()  # nothing was transmitted: try again on a new connection
            return SendResult(
                message.message_id, Outcome.RETRY, error_code="smtp", error_message=str(exc)
            )
        try:
            code, text = self._data(smtp, message, message_id, data)
        except smtplib.SMTPDataError as exc:
            return self._refused(smtp, message, exc.smtp_code, exc.smtp_error, stage="DATA")
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            # The message was (partly) transmitted: it may have been accepted. Never resend.
            return SendResult(
                message.message_id,
                Outcome.REJECTED,
                error_code="unknown",
                error_message=f"No answer after the message was sent ({exc}): it may have "
                "been delivered; not sent again.",
            )
        if code != 250:
            self._unjournal(message)
            return self._refused(smtp, message, code, text, stage="DATA")
        self._journal_confirm(message, message_id)
        return SendResult(message.message_id, Outcome.ACCEPTED, provider_id=message_id)

    def _data(self, smtp, message: OutgoingEmail, message_id: str, data: bytes):
        """``smtplib.SMTP.data`` with the pending journal entry written between the content
        and the terminating dot: the server cannot take the message before the dot, and may
        take it at any moment after."""
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        content = DOT_AT_LINE_START.sub(b"..", data)
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        smtp.send(content)
        self._journal_pending(message, message_id)
        smtp.send(b".\r\n")
        return smtp.getreply()

    def _refused(self, smtp, message: OutgoingEmail, code: int, text, *, stage: str):
        reply = _reply(code, text)
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()
        if 400 <= code < 500 or code < 400:
            if code == 421:
                self.close()
            return SendResult(
                message.message_id,
                Outcome.RETRY,
                error_code=str(code),
                error_message=f"{stage}: {reply}",
            )
        if stage == "MAIL":
            return SendResult(
                message.message_id, Outcome.FATAL, error_code=str(code), error_message=reply
            )
        return SendResult(
            message.message_id,
            Outcome.REJECTED,
            error_code=str(code),
            error_message=f"Bounced at {stage}: {reply}",
            bounced=True,
            suppress=stage == "RCPT" and code in SUPPRESS_CODES,
        )

    # --- journal of messages handed over -----------------------------------------------
    def _journal_pending(self, message: OutgoingEmail, message_id: str) -> None:
        """The message is about to be handed over (its terminating dot is next): pending, in
        the same round trip as the confirmations waiting (the previous message's 250)."""
        self._journal_write(_journal_key(message.lease, message.message_id), PENDING + message_id)

    def _journal_confirm(self, message: OutgoingEmail, message_id: str) -> None:
        """The server accepted it: confirmed with the next write (the next message's pending
        entry, the end of the window, or the connection's close), not a round trip of its
        own."""
        key = _journal_key(message.lease, message.message_id)
        self._confirmations.append((key, CONFIRMED + message_id))

    def _unjournal(self, message: OutgoingEmail) -> None:
        self._journal_write(_journal_key(message.lease, message.message_id), None)

    def _journal_write(self, key: str | None, value: str | None) -> None:
        """One round trip: the confirmations waiting, then ``key`` set to ``value`` (None:
        deleted)."""
        confirmations, self._confirmations = self._confirmations, []
        client = _redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)  # no pickling, one round trip
            for confirmed_key, confirmed in confirmations:
                pipe.set(confirmed_key, confirmed, ex=JOURNAL_SECONDS)
            if key is not None:
                if value is None:
                    pipe.delete(key)
                else:
                    pipe.set(key, value, ex=JOURNAL_SECONDS)
            pipe.execute()
            return
        for confirmed_key, confirmed in confirmations:
            cache.set(confirmed_key, confirmed, JOURNAL_SECONDS)
        if key is not None:
            if value is None:
                cache.delete(key)
            else:
                cache.set(key, value, JOURNAL_SECONDS)

    def _journal_flush(self) -> None:
        """Write the confirmations waiting (the end of a window, the connection's close). If
        the journal cannot be reached the rows' results still go to the database; only a
        worker dying before that would leave them pending (in doubt, never resent)."""
        if not self._confirmations:
            return
        try:
            self._journal_write(None, None)
        except Exception:  # noqa: BLE001 - the results themselves are still recorded
            logger.warning("the email journal could not confirm accepted messages", exc_info=True)

    def find_handed_over(self, *, queries: list[SentQuery], sender: str) -> HandedOver:
        """The journal's entries for the queried rows (one read per thousand): confirmed,
        Sent; pending (handed over, no 250 recorded), in doubt; none, never handed over."""
        queries = [query for query in queries if query.lease]
        sent: dict[int, str] = {}
        in_doubt: dict[int, str] = {}
        client = _redis_client()
        for start in range(0, len(queries), 1000):
            part = queries[start : start + 1000]
            keys = [_journal_key(query.lease, query.message_id) for query in part]
            if client is not None:
                values = client.mget(keys)
            else:
                found = cache.get_many(keys)
                values = [found.get(key) for key in keys]
            for query, value in zip(part, values, strict=True):
                if not value:
                    continue
                if isinstance(value, bytes):
                    value = value.decode()
                state, _, message_id = value.partition(":")
                if state + ":" == CONFIRMED:
                    sent[query.message_id] = message_id
                else:  # pending, or written by a version that did not confirm
                    in_doubt[query.message_id] = message_id or value
        return HandedOver(sent=sent, in_doubt=in_doubt)

    def find_sent_many(self, *, queries: list[SentQuery], sender: str) -> dict[int, str]:
        return self.find_handed_over(queries=queries, sender=sender).sent

    def find_sent(
        self,
        *,
        to: str,
        sender: str,
        since: datetime,
        body: str,
        message_id: int | None = None,
        lease: str = "",
    ) -> str | None:
        """The Message-ID of our row ``message_id`` sent under ``lease`` if the server's
        acceptance is confirmed in the journal."""
        if message_id is None or not lease:
            return None
        query = SentQuery(message_id=message_id, to=to, body=body, lease=lease, since=since)
        return self.find_sent_many(queries=[query], sender=sender).get(message_id)

    def check_credentials(self) -> None:
        problem = self._open()
        self.close()
        if problem is not None:
            raise ProviderError(problem[1])
