#!/usr/bin/env python3
"""ClickHouse HTTP interface served from one persistent chDB session.

TEST/DEV ONLY. This lets the real clickhouse-go/v2 client (Protocol:
clickhouse.HTTP) talk to the real ClickHouse engine (chDB is ClickHouse
compiled as a library) on machines where no ClickHouse server can be
installed. Production ehrwatch talks the native protocol to a real server;
nothing in the Go product code imports or knows about this adapter.

It implements the subset of the ClickHouse HTTP interface that
clickhouse-go/v2 (v2.51.0) uses; see README.md next to this file for the
exact list and the limits.

The one deliberate deviation from a real server is the handshake: chDB
always writes Native at protocol revision 0 (no BlockInfo, no per-column
custom-serialization flag, sparse columns made dense) because revision
negotiation lives in ClickHouse's HTTP handler, not in the engine.
clickhouse-go decodes the handshake query

    SELECT displayName(), version(), revision(), timezone()

at its own compiled-in revision (it sends it as client_protocol_version)
and then decodes every later Native result at the revision() the server
answered. So the adapter answers that one query itself: chDB computes the
row with revision() replaced by 0, and the adapter re-frames that single
block at the client's client_protocol_version (adds BlockInfo and the
custom-serialization flags). From then on the client decodes at revision
0, which is exactly what chDB writes.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import io
import json
import logging
import os
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
import zlib

# The adapter runs in UTC so that timezone() (which clickhouse-go uses for
# DateTime columns whose type name carries no zone; see README) is UTC, like
# the production servers. Must happen before chDB is loaded.
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()

from chdb import session as chdb_session  # noqa: E402

try:  # optional: only needed for clients configured with Brotli
    import brotli  # type: ignore
except Exception:  # pragma: no cover
    brotli = None

LOG = logging.getLogger("chdb_http")

HELLO_QUERY = "SELECT displayName(), version(), revision(), timezone()"
# Revision from which Native blocks carry one "has custom serialization"
# byte per column (DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION).
REVISION_WITH_CUSTOM_SERIALIZATION = 54454
# BlockInfo as NativeWriter writes it: field 1 is_overflows=false,
# field 2 bucket_num=-1, field 0 = end.
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

# URL parameters the ClickHouse HTTP handler consumes itself; every other
# parameter is a setting (as in ClickHouse, unknown settings are an error).
NON_SETTING_PARAMS = {
    "query",
    "database",
    "default_format",
    "user",
    "password",
    "quota_key",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
    "stacktrace",
    "role",
    "close_session",
}

MAX_BODY = 2 * 1024 * 1024 * 1024  # 2 GiB: refuse anything bigger (413)
# Insert bodies are spooled here (tmpfs when there is one).
SPOOL_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()

# Error-code -> HTTP status, as ClickHouse's exceptionCodeToHTTPStatus does.
# Names are resolved to numbers by the engine itself at start-up.
STATUS_BY_ERROR_NAME = {
    400: [
        "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN",
        "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA",
        "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    ],
    401: ["REQUIRED_PASSWORD"],
    403: ["ACCESS_DENIED", "AUTHENTICATION_FAILED", "WRONG_PASSWORD", "UNKNOWN_USER"],
    404: [
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
        "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
        "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
    ],
    408: ["TIMEOUT_EXCEEDED"],
    413: ["QUERY_IS_TOO_LARGE"],
    501: ["NOT_IMPLEMENTED"],
    503: ["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"],
}

CODE_RE = re.compile(r"Code:\s*(\d+)\.")
NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
INSERT_WITH_FORMAT_RE = re.compile(
    r"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I | re.S
)
INSERT_WITH_VALUES_RE = re.compile(r"^\s*(INSERT\s+INTO\s.*?)\s+VALUES\s*$", re.I | re.S)
SET_QUERY_RE = re.compile(r"^\s*SET\s", re.I)
# "INSERT INTO t (a, b) SETTINGS k = v": the SETTINGS clause has to move
# behind FROM INFILE.
INSERT_SETTINGS_RE = re.compile(r"^(\s*INSERT\s+INTO\s.*?)\s+SETTINGS\s+(.*)$", re.I | re.S)

CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}


class CHError(Exception):
    """An error to report the way ClickHouse does."""

    def __init__(self, code: int, name: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.status = status


def _quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def has_multiple_statements(sql: str) -> bool:
    """True if sql holds a second statement after a ';' (outside literals/comments).

    ClickHouse's HTTP interface rejects multi-statements; chDB runs them all,
    so without this check a test could pass on SQL production refuses.
    """
    i, n = 0, len(sql)
    seen_semicolon = False
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n:
                if sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == c:
                    if i + 1 < n and sql[i + 1] == c:  # doubled quote
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            if seen_semicolon:
                return True
            continue
        if sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if c == ";":
            seen_semicolon = True
        elif not c.isspace() and seen_semicolon:
            return True
        i += 1
    return False


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    out = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _write_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_FIXED = {"UInt8": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8, "Int8": 1, "Int16": 2, "Int32": 4, "Int64": 8}


def reframe_native(block: bytes, revision: int) -> bytes:
    """Re-frame one revision-0 Native block (String/int columns only) at `revision`.

    Used only for the handshake row. Adds BlockInfo (revision > 0) and a
    zero "has custom serialization" byte per column (revision >= 54454),
    exactly as ClickHouse's NativeWriter does for that revision.
    """
    if revision <= 0:
        return block
    pos = 0
    ncols, pos = _read_varint(block, pos)
    nrows, pos = _read_varint(block, pos)
    out = bytearray(BLOCK_INFO)
    out += _write_varint(ncols) + _write_varint(nrows)
    for _ in range(ncols):
        start = pos
        n, pos = _read_varint(block, pos)
        pos += n  # name
        n, pos = _read_varint(block, pos)
        type_name = block[pos:pos + n].decode()
        pos += n
        out += block[start:pos]
        if revision >= REVISION_WITH_CUSTOM_SERIALIZATION:
            out += b"\x00"
        data_start = pos
        if type_name == "String":
            for _ in range(nrows):
                n, pos = _read_varint(block, pos)
                pos += n
        elif type_name in _FIXED:
            pos += _FIXED[type_name] * nrows
        else:
            raise ValueError("reframe_native: unsupported type " + type_name)
        out += block[data_start:pos]
    if pos != len(block):
        raise ValueError("reframe_native: expected exactly one block")
    return bytes(out)


class Engine:
    """One persistent chDB session; every call is serialised by one lock.

    The lock makes "USE db; SET ...; query; restore settings" atomic, which
    is what gives each HTTP request the isolation a real server gives it.
    """

    def __init__(self, data_dir: str):
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.lock = threading.Lock()
        self.session = chdb_session.Session(data_dir)
        self.version = self._scalar("SELECT version()")
        self.display_name = self._scalar("SELECT displayName()")
        self.error_codes: dict[str, int] = {}
        for line in self._raw("SELECT errorCodeToName(number), number FROM numbers(2000) "
                              "WHERE errorCodeToName(number) != ''").splitlines():
            name, num = line.split("\t")
            self.error_codes[name] = int(num)
        self.status_by_code: dict[int, int] = {}
        for status, names in STATUS_BY_ERROR_NAME.items():
            for name in names:
                if name in self.error_codes:
                    self.status_by_code[self.error_codes[name]] = status
        self.baseline = self._changed_settings()

    # -- low level, lock must be held (or single-threaded start-up) ---------

    def _raw(self, sql: str, fmt: str = "TabSeparated", params=None) -> str:
        return self.session.query(sql, fmt, params=params).bytes().decode()

    def _scalar(self, sql: str) -> str:
        return self._raw(sql).rstrip("\n")

    def _changed_settings(self) -> dict[str, str]:
        out = {}
        for line in self._raw("SELECT name, value FROM system.settings WHERE changed "
                              "FORMAT TSVRaw").splitlines():
            name, _, value = line.partition("\t")
            out[name] = value
        out.pop("database", None)  # follows USE; managed per request
        return out

    def _restore_settings(self, names) -> None:
        for name in names:
            if name in self.baseline:
                self.session.query(f"SET {name} = {_quote_literal(self.baseline[name])}")
            else:
                self.session.query(f"SET {name} = DEFAULT")

    def _restore_all_settings(self) -> None:
        now = self._changed_settings()
        drift = [n for n, v in now.items() if self.baseline.get(n) != v]
        drift += [n for n in self.baseline if n not in now]
        self._restore_settings(drift)

    def error(self, code_name: str, message: str, status: int | None = None) -> CHError:
        code = self.error_codes.get(code_name, 1001)
        return CHError(code, code_name, message, status)

    def to_ch_error(self, exc: BaseException) -> CHError:
        if isinstance(exc, CHError):
            return exc
        text = str(exc)
        m = CODE_RE.search(text)
        if m:
            msg = text[m.start():].strip()
            names = NAME_RE.findall(msg)
            return CHError(int(m.group(1)), names[-1] if names else "", msg)
        return self.error("STD_EXCEPTION", "chdb_http adapter: %s: %s" % (type(exc).__name__, text))

    # -- request execution ----------------------------------------------------

    def execute(self, req: "Request") -> "Result":
        with self.lock:
            self.session.query("USE " + _quote_ident(req.database))
            applied = []
            try:
                for name, value in req.settings.items():
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                        raise self.error("UNKNOWN_SETTING", f"Unknown setting '{name}'")
                    self.session.query(f"SET {name} = {_quote_literal(value)}")
                    applied.append(name)
                return self._run(req)
            finally:
                try:
                    if SET_QUERY_RE.match(req.sql):
                        self._restore_all_settings()
                    elif applied:
                        self._restore_settings(applied)
                except Exception:  # never leave the session half-configured silently
                    LOG.exception("restoring settings failed; resetting all drifted settings")
                    try:
                        self._restore_all_settings()
                    except Exception:
                        LOG.exception("full settings reset failed")

    def _run(self, req: "Request") -> "Result":
        if req.insert_prefix is not None:
            return self._insert(req)
        if " ".join(req.sql.split()) == HELLO_QUERY:
            return self._hello(req)
        res = self.session.query(req.sql, req.fmt, params=req.params or None)
        if hasattr(res, "has_error") and res.has_error():
            raise RuntimeError(res.error_message())
        return Result(
            body=res.bytes(),
            rows_read=_safe_call(res, "rows_read"),
            bytes_read=_safe_call(res, "bytes_read"),
            elapsed=_safe_call(res, "elapsed"),
        )

    def _hello(self, req: "Request") -> "Result":
        sql = ("SELECT displayName() AS `displayName()`, version() AS `version()`, "
               "toUInt32(0) AS `revision()`, timezone() AS `timezone()`")
        if req.fmt != "Native":
            # Not clickhouse-go (it always asks for Native): answer honestly.
            return Result(body=self.session.query(HELLO_QUERY, req.fmt).bytes())
        block = self.session.query(sql, "Native").bytes()
        return Result(body=reframe_native(block, req.client_protocol_version), rows_read=1)

    def _insert(self, req: "Request") -> "Result":
        # The body is written to a file and inserted with FROM INFILE, the
        # path on which chDB parses client-supplied data like a server does
        # for an HTTP insert. (chDB's streaming send_insert() is NOT used: in
        # chdb-core 26.9.0 its finish() reports success even when the insert
        # fails in the table sink, e.g. on a violated CHECK constraint.)
        m = INSERT_SETTINGS_RE.match(req.insert_prefix)
        head, settings = (m.group(1), m.group(2)) if m else (req.insert_prefix, None)
        fd, path = tempfile.mkstemp(prefix="chdb_http_", suffix=".data", dir=SPOOL_DIR)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(req.data)
            sql = "%s FROM INFILE %s%s FORMAT %s" % (
                head, _quote_literal(path), " SETTINGS " + settings if settings else "", req.insert_format)
            res = self.session.query(sql, "TabSeparated")
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        return Result(body=b"", written_rows=_safe_call(res, "rows_written"),
                      written_bytes=_safe_call(res, "bytes_written"), elapsed=_safe_call(res, "elapsed"))

    def close(self) -> None:
        with self.lock:
            self.session.close()


def _safe_call(obj, name):
    try:
        return getattr(obj, name)()
    except Exception:
        return 0


class Request:
    __slots__ = ("sql", "database", "fmt", "settings", "params", "query_id", "client_protocol_version",
                 "insert_prefix", "insert_format", "data")

    def __init__(self):
        self.sql = ""
        self.database = "default"
        self.fmt = "TabSeparated"
        self.settings: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.query_id = ""
        self.client_protocol_version = 0
        self.insert_prefix = None
        self.insert_format = None
        self.data = b""


class Result:
    __slots__ = ("body", "rows_read", "bytes_read", "written_rows", "written_bytes", "elapsed")

    def __init__(self, body=b"", rows_read=0, bytes_read=0, written_rows=0, written_bytes=0, elapsed=0.0):
        self.body = body
        self.rows_read = rows_read
        self.bytes_read = bytes_read
        self.written_rows = written_rows
        self.written_bytes = written_bytes
        self.elapsed = elapsed


class BodyError(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb_http"
    sys_version = ""
    timeout = 900  # idle keep-alive connections are dropped after this

    # silence the default stderr access log; we log ourselves
    def log_message(self, format, *args):  # noqa: A002
        pass

    @property
    def engine(self) -> Engine:
        return self.server.engine  # type: ignore[attr-defined]

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self, head: bool = False):
        started = time.monotonic()
        status = 500
        sql_for_log = ""
        out_len = 0
        try:
            url = urllib.parse.urlsplit(self.path)
            path = url.path
            qs = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            params = {k: v[-1] for k, v in qs.items()}
            body = b""
            if self.command == "POST":
                try:
                    body = self._read_body()
                except BodyError as e:
                    self.close_connection = True
                    raise self.engine.error("CANNOT_READ_ALL_DATA", str(e), status=400)
            if path in ("/ping", "/replicas_status") or (path == "/" and "query" not in params and not body):
                status = 200
                out_len = self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}, head)
                return
            if path != "/":
                raise self.engine.error("NOT_IMPLEMENTED",
                                        f"chdb_http adapter: no handler for path {path}", status=404)
            req = self._build_request(params, body)
            sql_for_log = req.sql if req.insert_prefix is None else (req.insert_prefix + " FORMAT " + req.insert_format)
            result = self.engine.execute(req)
            status = 200
            out_len = self._send_result(req, result, head)
        except BaseException as exc:  # a request must never kill the server
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                status = 499
                self.close_connection = True
                return
            err = self.engine.to_ch_error(exc)
            if not isinstance(exc, CHError) and not CODE_RE.search(str(exc)):
                LOG.error("unexpected error:\n%s", traceback.format_exc())
            status = err.status or self.engine.status_by_code.get(err.code, 500)
            msg = err.message
            if not CODE_RE.match(msg):
                msg = "Code: %d. DB::Exception: %s. (%s)" % (err.code, msg.rstrip("."), err.name or "UNKNOWN_EXCEPTION")
            if "(version " not in msg:
                msg += " (version %s)" % self.engine.version
            try:
                out_len = self._send(status, (msg + "\n").encode("utf-8", "replace"), {
                    "Content-Type": "text/plain; charset=UTF-8",
                    "X-ClickHouse-Exception-Code": str(err.code),
                }, head)
            except Exception:
                self.close_connection = True
            sql_for_log = sql_for_log or "(error before query)"
            sql_for_log += "  -> " + msg
        finally:
            dur = (time.monotonic() - started) * 1000
            LOG.info("%s %s %s status=%d dur=%.1fms out=%dB q=%s", self.client_address[1], self.command,
                     self.path.split("?", 1)[0], status, dur, out_len,
                     json.dumps(" ".join(sql_for_log.split())[:200], ensure_ascii=False))

    # -- request parsing ------------------------------------------------------

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BodyError("unexpected EOF in chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BodyError("malformed chunk size %r in chunked body" % line[:20])
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise BodyError("request body too large")
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise BodyError("unexpected EOF in chunked body")
                chunks.append(chunk)
                self.rfile.readline(3)  # CRLF after chunk
            body = b"".join(chunks)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                raise BodyError("request body too large")
            body = self.rfile.read(n) if n else b""
            if len(body) != n:
                raise BodyError("unexpected EOF in request body")
        enc = (self.headers.get("Content-Encoding") or "").strip().lower()
        if enc in ("", "identity"):
            return body
        if enc in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if enc == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -15)
        if enc in ("br",) and brotli is not None:
            return brotli.decompress(body)
        raise self.engine.error("NOT_IMPLEMENTED",
                                f"chdb_http adapter: unsupported Content-Encoding {enc!r} "
                                "(use gzip/deflate or no compression)")

    def _build_request(self, params: dict, body: bytes) -> Request:
        eng = self.engine
        ctype = (self.headers.get("Content-Type") or "").lower()
        if ctype.startswith("multipart/"):
            raise eng.error("NOT_IMPLEMENTED", "chdb_http adapter: external tables (multipart/form-data) "
                            "are not supported")
        for flag in ("compress", "decompress"):
            if params.get(flag, "0") not in ("", "0", "false"):
                raise eng.error("NOT_IMPLEMENTED",
                                f"chdb_http adapter: {flag}=1 (ClickHouse native LZ4/ZSTD HTTP "
                                "compression) is not supported; open clickhouse-go with "
                                "Compression nil/None (or gzip/deflate)")
        req = Request()
        req.database = (params.get("database") or self.headers.get("X-ClickHouse-Database") or "default")
        req.fmt = (params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated")
        req.query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            req.client_protocol_version = int(params.get("client_protocol_version") or 0)
        except ValueError:
            raise eng.error("CANNOT_PARSE_NUMBER", "client_protocol_version must be a number", status=400)
        for k, v in params.items():
            if k.startswith("param_"):
                req.params[k[len("param_"):]] = v
            elif k in NON_SETTING_PARAMS:
                continue
            else:
                req.settings[k] = v
        qparam = params.get("query")
        if qparam is not None and body:
            m = INSERT_WITH_FORMAT_RE.match(qparam)
            mv = None if m else INSERT_WITH_VALUES_RE.match(qparam)
            if m or mv:
                req.insert_prefix = (m or mv).group(1)
                req.insert_format = m.group(2) if m else "Values"
                req.data = body
                req.sql = qparam
                return req
        if qparam is None:
            text_bytes = body
        elif body:
            text_bytes = qparam.encode("utf-8") + b"\n" + body
        else:
            text_bytes = qparam.encode("utf-8")
        try:
            req.sql = text_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise eng.error("NOT_IMPLEMENTED", "chdb_http adapter: binary data in the request body is only "
                            "supported with ?query=INSERT ... FORMAT <fmt>", status=400)
        if not req.sql.strip():
            raise eng.error("SYNTAX_ERROR", "Empty query", status=400)
        if not re.match(r"\s*INSERT\b", req.sql, re.I) and has_multiple_statements(req.sql):
            raise eng.error("SYNTAX_ERROR", "Multi-statements are not allowed", status=400)
        return req

    # -- responses --------------------------------------------------------------

    def _send_result(self, req: Request, res: Result, head: bool) -> int:
        headers = {
            "Content-Type": CONTENT_TYPES.get(req.fmt, "text/tab-separated-values; charset=UTF-8"),
            "X-ClickHouse-Format": req.fmt,
            "X-ClickHouse-Query-Id": req.query_id,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": self.engine.display_name,
            "X-ClickHouse-Summary": json.dumps({
                "read_rows": str(res.rows_read or 0), "read_bytes": str(res.bytes_read or 0),
                "written_rows": str(res.written_rows or 0), "written_bytes": str(res.written_bytes or 0),
                "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(res.body)),
                "elapsed_ns": str(int((res.elapsed or 0) * 1e9)),
            }, separators=(",", ":")),
        }
        body = res.body
        if req.settings.get("enable_http_compression", "0") not in ("0", "", "false") and body:
            accept = (self.headers.get("Accept-Encoding") or "").lower()
            if "gzip" in accept:
                body = gzip.compress(body, 3)
                headers["Content-Encoding"] = "gzip"
            elif "deflate" in accept:
                body = zlib.compress(body, 3)
                headers["Content-Encoding"] = "deflate"
        return self._send(200, body, headers, head)

    def _send(self, status: int, body: bytes, headers: dict, head: bool) -> int:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        return len(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            LOG.info("connection from %s ended: %s", client_address, exc.__class__.__name__)
            return
        LOG.error("connection error from %s:\n%s", client_address, traceback.format_exc())


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="chDB session directory (persistent)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--port-file", help="write the bound port here once ready")
    ap.add_argument("--pid-file", help="write the server pid here at start")
    ap.add_argument("--log-file", help="request log (default: stderr)")
    args = ap.parse_args(argv)

    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)

    if args.pid_file:
        _write_atomic(args.pid_file, "%d\n" % os.getpid())

    t0 = time.monotonic()
    engine = Engine(args.data_dir)
    server = Server((args.host, args.port), Handler)
    server.engine = engine  # type: ignore[attr-defined]
    port = server.server_address[1]
    LOG.info("chdb_http ready on %s:%d (ClickHouse %s via chDB, data %s, start %.2fs)",
             args.host, port, engine.version, args.data_dir, time.monotonic() - t0)

    def _stop(signum, _frame):
        LOG.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.port_file:
        _write_atomic(args.port_file, "%d\n" % port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if engine.lock.acquire(timeout=30):
            try:
                engine.session.close()
            finally:
                engine.lock.release()
        LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
