"""The text `hibiki migrate` prints: what a pass copied, then what verification found."""

from __future__ import annotations

from storage.migrate._run import MigrationResult

_MAX_LISTED = 50  # mismatches printed; the rest are counted


def render(result: MigrationResult) -> str:
    """The report, one fact a line; mismatches listed one per line, indented, each detail."""
    lines = [f"source: {result.source}", f"target: {result.target}"]
    copied = result.copied
    if copied is not None:
        changes = ", ".join(f"{n} {what}" for what, n in copied.catalog.items() if n) or "none"
        rate = copied.messages / copied.seconds if copied.seconds > 0 else 0.0
        lines.append(f"catalog changes: {changes}")
        bulk = " (bulk mode: constraints rebuilt after the copy)" if copied.bulk else ""
        lines.append(
            f"copied {copied.messages} messages in {copied.seconds:.2f} s"
            f" ({rate:,.0f} messages/s){bulk}"
        )
    verification = result.verification
    source = verification.source
    lines.append(
        f"verified {len(source.rooms)} rooms, {source.messages} messages, {source.users.rows}"
        f" users, {source.tokens.rows} tokens, {source.memberships} memberships"
        f" in {verification.seconds:.2f} s"
    )
    for mismatch in verification.mismatches[:_MAX_LISTED]:
        lines.append(f"MISMATCH {mismatch.what}:")
        lines.extend(f"    {detail}" for detail in mismatch.details)
    hidden = len(verification.mismatches) - _MAX_LISTED
    if hidden > 0:
        lines.append(f"... and {hidden} more mismatches")
    if verification.ok:
        lines.append("OK: the target matches the source")
    else:
        lines.append(f"FAILED: {len(verification.mismatches)} mismatches")
    return "\n".join(lines) + "\n"
