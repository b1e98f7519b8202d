"""How the SQLite store keeps a journal entry's canonical text: deflated, and given back byte for byte.

A journal entry is canonical JSON (about 0.9 KiB for a bet), most of it member names that every
entry repeats. The chain hashes that text, and every reader (the writer's replays, `GET
/v1/journal` and the standby that tails it, `verify`, `rebuild`, backups) sees it exactly as it was
sealed: only the bytes at rest differ. `stored_entry(text)` is what the `journal.entry` column holds:
a BLOB of one format byte (`DEFLATED_V1`) then the text's UTF-8 deflated (raw deflate, level 1) with
the fixed preset dictionary `DICTIONARY_V1`, about 0.2 KiB for a bet. `entry_text(stored)` reverses
it; a TEXT value (rows written before this format, or by anything that stores plain text) is the
entry as it is, so both kinds may sit in one journal and no migration rewrites old rows.

`DICTIONARY_V1` is part of the stored format: never change it (a test pins its digest). A better
dictionary would be a new format byte, with this one still read. A stored value that does not
decode (a corrupted page, an unknown format byte) reads as `UNDECODABLE`, which is not JSON: `verify`
names its sequence as the first bad entry, and nothing else can mistake it for an entry.

See docs/decisions/sqlite-journal-deflated-at-rest.md.
"""

from __future__ import annotations

import zlib

DEFLATED_V1 = b"\x01"
# A bet entry's shape (hashes and ids zeroed), then the members of other entry types: the strings
# entries repeat. Deflate finds a match anywhere in it; the most common ones sit at its end.
DICTIONARY_V1 = (
    b'"kind":"rollback","rolled_back_sequence":0,"reason":"","bonus_id":"","win_minor":0,'
    b'"wagering_left_minor":0,"wagered_minor":0,"status":"","external_ref":null,"frozen":false,'
    b'"currencies":["EUR"],"player":{"bonus_ids":[],"type":"win","type":"deposit","cashier:EUR",'
    b'"bonus:","refunded","round_close","round_refund","withdrawal","jackpot_win","closed",'
    b'{"epoch":1,"format":2,"hash":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"postings":[{"account":"player:p0:EUR","amount_minor":-100,"currency":"EUR"},'
    b'{"account":"house:EUR","amount_minor":100,"currency":"EUR"},'
    b'{"account":"house:EUR","amount_minor":-1,"currency":"EUR"},'
    b'{"account":"jackpot:j0","amount_minor":1,"currency":"EUR"}],'
    b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","sequence":1,'
    b'"transaction":{"client_id":"edge","committed_at":"2026-01-01T00:00:00.000000Z","id":"b0",'
    b'"outcome":"committed","principal":"edge","request":{"amount_minor":100,"currency":"EUR",'
    b'"game_id":"slots-1","id":"b0","player_id":"p0","round_id":"r0"},"result":{"balance":'
    b'{"balance_minor":1000,"currency":"EUR","player_id":"p0","version":1},"bonus_wagering":[],'
    b'"jackpot_contributions":[{"amount_minor":1,"epoch":1,"jackpot_id":"j0"}],"round_client_id":"edge"},'
    b'"type":"bet","via":"edge"}}'
)
# Raw deflate (no header, no checksum: the chain is the checksum), a 4 KiB window (the dictionary
# and a typical entry both within reach), a small hash table: what costs least per entry here.
_LEVEL, _WINDOW_BITS, _MEM_LEVEL = 1, -12, 5
# A compressor primed with the dictionary once; each entry deflates with a copy of it (cheaper than
# priming a new one each time).
_PRIMED = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WINDOW_BITS, _MEM_LEVEL, zdict=DICTIONARY_V1)
UNDECODABLE = "<undecodable stored journal entry>"


def stored_entry(text: str) -> bytes:
    """What the `journal.entry` column stores for the canonical entry `text`."""
    deflate = _PRIMED.copy()
    return DEFLATED_V1 + deflate.compress(text.encode()) + deflate.flush()


def entry_text(stored: str | bytes) -> str:
    """The canonical entry text of a stored `journal.entry` value (`UNDECODABLE` if it is not one)."""
    if isinstance(stored, str):
        return stored
    if stored[:1] != DEFLATED_V1:
        return UNDECODABLE
    inflate = zlib.decompressobj(-15, zdict=DICTIONARY_V1)  # any window up to 32 KiB decodes
    try:
        data = inflate.decompress(stored[1:]) + inflate.flush()
        if not inflate.eof or inflate.unused_data:
            return UNDECODABLE
        return data.decode()
    except (zlib.error, UnicodeDecodeError):
        return UNDECODABLE
