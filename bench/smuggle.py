#!/usr/bin/env python3
"""Request-smuggling differential: deskgate next to nginx and HAProxy.

Every case of CASES is sent as raw bytes on a fresh TCP connection through each proxy (plain HTTP
listeners, plus deskgate behind TLS) to a recording upstream of this script, which keeps the exact
bytes each of its connections received, parses them with the strict HTTP/1.1 parser below
(RFC 9112 without any of its leniencies), and answers every request it reads with `200` and a
marker naming the connection, then `Connection: close`. Per case and proxy the table says what the
client got and what reached the upstream:

  SAFE         nothing reached the upstream (rejected, or never complete), or every upstream
               connection carried exactly one request that the strict parser reads without any
               ambiguity (whatever a lenient origin does, it frames the same bytes the same way);
  DESYNC RISK  an upstream connection carried bytes the strict parser reads as two requests, as
               an ambiguous request (both framings, bare LF, obs-fold, a non-token, ...), or as
               one request followed by bytes that are no request at all.

A proxy "rejects" when the client gets a 4xx/5xx the proxy wrote itself (no upstream marker) and
nothing reached the upstream. The strictness column compares deskgate with the strictest peer.

    bench/smuggle.py [--deskgate target/debug/deskgate] [--only deskgate,nginx] [--case te-xchunked]

Writes bench/results/smuggle-<date>.md and .json. Everything runs on 127.0.0.1; every connection
is bounded in time. Needs nginx and haproxy (bench/run installs them).
"""
import argparse, json, os, re, shutil, socket, ssl, subprocess, sys, threading, time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (free_port, wait_port, System: the side-by-side bench's configs)

ROOT = bench.ROOT
HOST = "smuggle.test"
# Generous waits: on a loaded machine a proxy may take a second to answer, and a missed answer
# would read as a refusal or as a lost canary.
CLIENT_FIRST = 5.0     # the client waits this long for a first byte
CLIENT_IDLE = 1.0      # then stops reading after this long without one
CLIENT_LIMIT = 10.0    # and after this long in all
UPSTREAM_IDLE = 3.0    # the upstream closes a connection this long after its last byte
UPSTREAM_AFTER = 1.0   # or this long once it answered (close mode)
UPSTREAM_LIMIT = 12.0

# ---------------------------------------------------------------------------------------------
# The corpus. Each case: (name, class, what it probes, bytes or list of byte parts sent with a
# short pause between them). `{n}` in a target is replaced by the case number so the upstream's
# log names the case; SMUGGLED is a complete second request that must never reach the upstream
# as a request of its own unless the proxy itself saw it as one.

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"


def http(head_lines, body=b"", target="/c", method="POST", version="HTTP/1.1", eol=b"\r\n", host=True):
    """A request from header lines (str or bytes) with the Host line first unless host=False."""
    lines = [f"{method} {target} {version}".encode()]
    if host:
        lines.append(b"Host: " + HOST.encode())
    lines += [l.encode() if isinstance(l, str) else l for l in head_lines]
    return eol.join(lines) + eol + eol + body


def chunked(*parts, end=b"0\r\n\r\n"):
    out = b""
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + end


SMUGGLE_BODY = b"0\r\n\r\n" + SMUGGLED          # a TE reader stops at 0, a CL reader takes all
TECL_BODY = chunked(SMUGGLED)                    # a CL reader of 4 bytes leaves SMUGGLED behind


def te_variant(name, te_line, why):
    """CL covers the whole body, TE (obfuscated) would end it after `0`: TE.TE / CL.TE."""
    lines = [f"Content-Length: {len(SMUGGLE_BODY)}".encode(), te_line]
    return (name, "TE obfuscation", why, http(lines, SMUGGLE_BODY))


CASES = [
    # Controls: what every proxy must forward.
    ("get", "control", "a plain GET", http([], method="GET")),
    ("post-cl", "control", "POST with Content-Length", http(["Content-Length: 5"], b"hello")),
    ("post-chunked", "control", "POST chunked", http(["Transfer-Encoding: chunked"], chunked(b"hello"))),
    ("pipeline", "control", "two GETs pipelined (two requests, two answers)",
     http([], method="GET") + http([], method="GET", target="/c-second")),
    ("cl0-then-request", "control", "CL: 0, then a pipelined GET (two requests)",
     http(["Content-Length: 0"]) + SMUGGLED),
    ("get-cl-body", "control", "GET with a Content-Length body holding a request (CL.0 probe)",
     http([f"Content-Length: {len(SMUGGLED)}"], SMUGGLED, method="GET")),
    # CL and TE together.
    ("cl-te", "CL.TE", "Content-Length and Transfer-Encoding: chunked, body = 0-chunk + request",
     http([f"Content-Length: {len(SMUGGLE_BODY)}", "Transfer-Encoding: chunked"], SMUGGLE_BODY)),
    ("te-cl", "TE.CL", "Transfer-Encoding first, Content-Length: 4 (CL reader leaves a request)",
     http(["Transfer-Encoding: chunked", "Content-Length: 4"], TECL_BODY)),
    ("te-cl0", "TE.CL", "Transfer-Encoding: chunked with Content-Length: 0",
     http(["Transfer-Encoding: chunked", "Content-Length: 0"], TECL_BODY)),
    ("cl-te-close", "CL.TE", "CL.TE with Connection: close",
     http([f"Content-Length: {len(SMUGGLE_BODY)}", "Transfer-Encoding: chunked", "Connection: close"], SMUGGLE_BODY)),
    ("cl-te-keepalive-10", "CL.TE", "HTTP/1.0 keep-alive with CL and TE",
     http([f"Content-Length: {len(SMUGGLE_BODY)}", "Transfer-Encoding: chunked", "Connection: keep-alive"],
          SMUGGLE_BODY, version="HTTP/1.0")),
    # Transfer-Encoding obfuscations (each with a Content-Length covering the whole body).
    te_variant("te-xchunked", b"Transfer-Encoding: xchunked", "unknown coding"),
    te_variant("te-chunked-identity", b"Transfer-Encoding: chunked, identity", "chunked not last"),
    te_variant("te-identity-chunked", b"Transfer-Encoding: identity, chunked", "identity (unregistered) before chunked"),
    te_variant("te-trailing-space", b"Transfer-Encoding: chunked ", "trailing space"),
    te_variant("te-trailing-tab", b"Transfer-Encoding: chunked\t", "trailing tab"),
    te_variant("te-upper", b"Transfer-Encoding: CHUNKED", "upper-case value"),
    te_variant("te-name-upper", b"TRANSFER-ENCODING: chunked", "upper-case name"),
    te_variant("te-obs-fold", b"Transfer-Encoding:\r\n chunked", "value on an obs-fold line"),
    te_variant("te-obs-fold-2", b"Transfer-Encoding: identity\r\n chunked", "second value on an obs-fold line"),
    te_variant("te-space-colon", b"Transfer-Encoding : chunked", "space before the colon"),
    te_variant("te-tab-colon", b"Transfer-Encoding\t: chunked", "tab before the colon"),
    te_variant("te-leading-space-line", b" Transfer-Encoding: chunked", "line starting with a space (obs-fold of the line before)"),
    te_variant("te-dup-chunked", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "two TE fields"),
    te_variant("te-dup-identity", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", "TE fields chunked then identity"),
    te_variant("te-chunked-chunked", b"Transfer-Encoding: chunked, chunked", "chunked twice"),
    te_variant("te-empty", b"Transfer-Encoding: ", "empty value"),
    te_variant("te-leading-comma", b"Transfer-Encoding: , chunked", "leading comma"),
    te_variant("te-trailing-comma", b"Transfer-Encoding: chunked,", "trailing comma"),
    te_variant("te-vtab", b"Transfer-Encoding: chunked\x0b", "vertical tab after the value"),
    te_variant("te-formfeed", b"Transfer-Encoding: \x0cchunked", "form feed before the value"),
    te_variant("te-nul", b"Transfer-Encoding: chunked\x00", "NUL after the value"),
    te_variant("te-underscore", b"Transfer_Encoding: chunked", "underscore in the name"),
    te_variant("te-quoted", b'Transfer-Encoding: "chunked"', "quoted value"),
    te_variant("te-gzip-chunked", b"Transfer-Encoding: gzip, chunked", "a real coding before chunked"),
    te_variant("te-http10", b"Transfer-Encoding: chunked", "(HTTP/1.0 below)"),
    # Transfer-Encoding oddities without a Content-Length (the coding list alone).
    ("te-only-identity-chunked", "TE only", "identity, chunked", http(["Transfer-Encoding: identity, chunked"], chunked(b"hello"))),
    ("te-only-gzip-chunked", "TE only", "gzip, chunked (body not gzip)", http(["Transfer-Encoding: gzip, chunked"], chunked(b"hello"))),
    ("te-only-chunked-chunked", "TE only", "chunked, chunked", http(["Transfer-Encoding: chunked, chunked"], chunked(b"hello"))),
    ("te-only-two-fields", "TE only", "two Transfer-Encoding: chunked fields", http(["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], chunked(b"hello"))),
    ("te-only-upper", "TE only", "Transfer-Encoding: CHUNKED", http(["Transfer-Encoding: CHUNKED"], chunked(b"hello"))),
    ("te-only-xchunked", "TE only", "Transfer-Encoding: xchunked, no length (body read to close?)", http(["Transfer-Encoding: xchunked"], SMUGGLE_BODY)),
    # Content-Length oddities.
    ("cl-dup-equal", "CL", "two Content-Length: 5", http(["Content-Length: 5", "Content-Length: 5"], b"hello")),
    ("cl-dup-diff", "CL", "Content-Length: 5 and 6, 6 bytes sent", http(["Content-Length: 5", "Content-Length: 6"], b"helloG")),
    ("cl-comma-same", "CL", "Content-Length: 5, 5", http(["Content-Length: 5, 5"], b"hello")),
    ("cl-comma-diff", "CL", "Content-Length: 5, 6", http(["Content-Length: 5, 6"], b"helloG")),
    ("cl-plus", "CL", "Content-Length: +5", http(["Content-Length: +5"], b"hello")),
    ("cl-minus", "CL", "Content-Length: -1", http(["Content-Length: -1"], b"hello")),
    ("cl-minus-zero", "CL", "Content-Length: -0", http(["Content-Length: -0"], b"")),
    ("cl-leading-zeros", "CL", "Content-Length: 005", http(["Content-Length: 005"], b"hello")),
    ("cl-hex", "CL", "Content-Length: 0x5", http(["Content-Length: 0x5"], b"hello")),
    ("cl-inner-space", "CL", "Content-Length: 1 0 (ten bytes sent)", http(["Content-Length: 1 0"], b"helloworld")),
    ("cl-junk", "CL", "Content-Length: 5abc", http(["Content-Length: 5abc"], b"hello")),
    ("cl-overflow", "CL", "Content-Length: 2^64 + 5", http(["Content-Length: 18446744073709551621"], b"hello")),
    ("cl-space-colon", "CL", "Content-Length : 5", http(["Content-Length : 5"], b"hello")),
    ("cl-underscore", "CL", "Content_Length: 5 (body is a request)", http([f"Content_Length: {len(SMUGGLED)}".encode()], SMUGGLED)),
    ("cl-smuggle-in-body", "CL", "a body of Content-Length bytes that is a request", http([f"Content-Length: {len(SMUGGLED)}".encode()], SMUGGLED)),
    ("cl-short-then-request", "CL", "Content-Length shorter than the body, the rest a request",
     http(["Content-Length: 5"], b"hello" + SMUGGLED)),
    # Chunked bodies.
    ("chunk-ext", "chunked", "chunk extension name=value", http(["Transfer-Encoding: chunked"], b"5;foo=bar\r\nhello\r\n0\r\n\r\n")),
    ("chunk-ext-quoted", "chunked", "quoted chunk extension", http(["Transfer-Encoding: chunked"], b'5;a="b c"\r\nhello\r\n0\r\n\r\n')),
    ("chunk-ext-lf", "chunked", "bare LF inside a chunk extension (TERM.EXT)",
     http(["Transfer-Encoding: chunked"], b"5;a\nxx\r\nhello\r\n0\r\n\r\n")),
    ("chunk-ext-cr", "chunked", "bare CR inside a chunk extension", http(["Transfer-Encoding: chunked"], b"5;a\rb\r\nhello\r\n0\r\n\r\n")),
    ("chunk-ext-ctl", "chunked", "control byte in a chunk extension", http(["Transfer-Encoding: chunked"], b"5;a=\x01\r\nhello\r\n0\r\n\r\n")),
    ("chunk-bare-semicolon", "chunked", "chunk size followed by a bare ;", http(["Transfer-Encoding: chunked"], b"5;\r\nhello\r\n0\r\n\r\n")),
    ("chunk-overflow", "chunked", "chunk size 0x10000000000000005 (wraps to 5 in 64 bits)",
     http(["Transfer-Encoding: chunked"], b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk-leading-zeros", "chunked", "chunk size with 18 leading zeros",
     http(["Transfer-Encoding: chunked"], b"0000000000000000005\r\nhello\r\n0\r\n\r\n")),
    ("chunk-negative", "chunked", "chunk size -5", http(["Transfer-Encoding: chunked"], b"-5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-plus", "chunked", "chunk size +5", http(["Transfer-Encoding: chunked"], b"+5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-0x", "chunked", "chunk size 0x5", http(["Transfer-Encoding: chunked"], b"0x5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-leading-space", "chunked", "chunk size with a leading space", http(["Transfer-Encoding: chunked"], b" 5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-trailing-space", "chunked", "chunk size with a trailing space", http(["Transfer-Encoding: chunked"], b"5 \r\nhello\r\n0\r\n\r\n")),
    ("chunk-underscore", "chunked", "chunk size 1_0", http(["Transfer-Encoding: chunked"], b"1_0\r\nhelloworld\r\n0\r\n\r\n")),
    ("chunk-data-lf", "chunked", "chunk data ended by a bare LF", http(["Transfer-Encoding: chunked"], b"5\r\nhello\n0\r\n\r\n")),
    ("chunk-size-lf", "chunked", "chunk-size lines ended by a bare LF", http(["Transfer-Encoding: chunked"], b"5\nhello\r\n0\n\n")),
    ("chunk-data-cr", "chunked", "chunk data ended by a bare CR", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r0\r\n\r\n")),
    ("chunk-spill", "chunked", "more data than the chunk size", http(["Transfer-Encoding: chunked"], b"3\r\nhello\r\n0\r\n\r\n")),
    ("chunk-no-crlf", "chunked", "chunk data without its CRLF", http(["Transfer-Encoding: chunked"], b"5\r\nhello0\r\n\r\n")),
    ("chunk-last-lf", "chunked", "last chunk ended by CRLF LF", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\n")),
    ("trailer", "chunked", "a trailer field", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nX-Trailer: a\r\n\r\n")),
    ("trailer-cl", "chunked", "Content-Length as a trailer", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n")),
    ("trailer-te", "chunked", "Transfer-Encoding as a trailer", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
    ("trailer-host", "chunked", "Host as a trailer", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nHost: evil.test\r\n\r\n")),
    ("trailer-obs-fold", "chunked", "a trailer with obs-fold", http(["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n")),
    ("chunked-then-request", "chunked", "chunked body then a pipelined GET (two requests)",
     http(["Transfer-Encoding: chunked"], chunked(b"hello") + SMUGGLED)),
    ("get-chunked", "chunked", "GET with a chunked body holding a request", http(["Transfer-Encoding: chunked"], TECL_BODY, method="GET")),
    # Line endings.
    ("bare-lf", "line endings", "every line ended by a bare LF", http(["Content-Length: 5"], b"hello", eol=b"\n")),
    ("bare-lf-one", "line endings", "one header line ended by a bare LF",
     http([b"X-A: 1\nContent-Length: 5"], b"hello")),
    ("bare-cr-value", "line endings", "bare CR inside a header value", http([b"X-A: a\rb", "Content-Length: 5"], b"hello")),
    ("bare-cr-te", "line endings", "bare CR separating a TE line (CR read as a line end?)",
     http([b"X-A: a\rTransfer-Encoding: chunked", f"Content-Length: {len(SMUGGLE_BODY)}".encode()], SMUGGLE_BODY)),
    ("lf-cr-lf", "line endings", "header section ended by LF CR LF", b"POST /c HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: 5\n\r\nhello"),
    # Header syntax.
    ("value-nul", "header syntax", "NUL in a header value", http([b"X-A: a\x00b", "Content-Length: 5"], b"hello")),
    ("value-ctl", "header syntax", "control byte 0x01 in a header value", http([b"X-A: a\x01b", "Content-Length: 5"], b"hello")),
    ("value-del", "header syntax", "DEL in a header value", http([b"X-A: a\x7fb", "Content-Length: 5"], b"hello")),
    ("value-obs-text", "header syntax", "UTF-8 (obs-text) in a header value", http([b"X-A: caf\xc3\xa9", "Content-Length: 5"], b"hello")),
    ("name-space", "header syntax", "space inside a header name", http([b"X A: b", "Content-Length: 5"], b"hello")),
    ("name-nontoken", "header syntax", "'(' '@' in a header name", http([b"X(A)@: b", "Content-Length: 5"], b"hello")),
    ("name-empty", "header syntax", "empty header name", http([b": b", "Content-Length: 5"], b"hello")),
    ("no-colon", "header syntax", "header line without a colon", http([b"X-A b", "Content-Length: 5"], b"hello")),
    ("name-utf8", "header syntax", "non-ASCII header name", http([b"X-\xc3\xa9: b", "Content-Length: 5"], b"hello")),
    ("long-header-9k", "header syntax", "one 9 KiB header line", http([b"X-Long: " + b"a" * 9000], method="GET")),
    ("long-header-70k", "header syntax", "one 70 KiB header line", http([b"X-Long: " + b"a" * 70000], method="GET")),
    ("many-headers", "header syntax", "300 header fields", http([b"X-H%d: v" % i for i in range(300)], method="GET")),
    # Host and the target.
    ("host-missing", "host", "HTTP/1.1 without Host", http([], method="GET", host=False)),
    ("host-dup-same", "host", "Host twice, same value", http(["Host: " + HOST], method="GET")),
    ("host-dup-diff", "host", "Host twice, different values", http(["Host: evil.test"], method="GET")),
    ("host-comma", "host", "Host: a, b", http(["Host: " + HOST + ", evil.test"], method="GET", host=False)),
    ("host-userinfo", "host", "Host with userinfo", http(["Host: user@" + HOST], method="GET", host=False)),
    ("host-empty", "host", "empty Host", http(["Host: "], method="GET", host=False)),
    ("host-space-colon", "host", "Host : (space before colon) as the only Host", http(["Host : " + HOST], method="GET", host=False)),
    ("absolute-other-host", "host", "absolute-form target naming another host", http([], method="GET", target="http://evil.test/c")),
    ("absolute-same-host", "host", "absolute-form target naming the Host", http([], method="GET", target=f"http://{HOST}/c")),
    ("absolute-no-host", "host", "absolute-form target, no Host field", http([], method="GET", target="http://evil.test/c", host=False)),
    ("host-fold", "host", "Host continued on an obs-fold line", http([" evil.test"], method="GET")),
    # Expect.
    ("expect-100", "Expect", "Expect: 100-continue, headers then body after a pause",
     [http(["Content-Length: 5", "Expect: 100-continue"]), b"hello"]),
    ("expect-100-nobody", "Expect", "Expect: 100-continue, body never sent, then a request (0.CL)",
     [http(["Content-Length: 5", "Expect: 100-continue"]), SMUGGLED]),
    ("expect-obfuscated", "Expect", "Expect: y 100-continue", http(["Content-Length: 5", "Expect: y 100-continue"], b"hello")),
    ("expect-fold", "Expect", "Expect on an obs-fold line", http(["Content-Length: 5", "Expect:", " 100-continue"], b"hello")),
    ("expect-unknown", "Expect", "Expect: 200-ok", http(["Content-Length: 5", "Expect: 200-ok"], b"hello")),
    ("expect-get", "Expect", "GET with Expect: 100-continue and a body", http([f"Content-Length: {len(SMUGGLED)}", "Expect: 100-continue"], SMUGGLED, method="GET")),
    # Request line.
    ("rl-two-spaces", "request line", "two spaces after the method", b"GET  /c HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"),
    ("rl-tab", "request line", "tab between method and target", b"GET\t/c HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"),
    ("rl-lower-method", "request line", "lower-case method", http([], method="get")),
    ("rl-http12", "request line", "HTTP/1.2", http([], method="GET", version="HTTP/1.2")),
    ("rl-http09", "request line", "HTTP/0.9 (no version)", b"GET /c\r\n\r\n"),
    ("rl-http20", "request line", "HTTP/2.0 on an HTTP/1 connection", http([], method="GET", version="HTTP/2.0")),
    ("rl-lower-version", "request line", "http/1.1 in lower case", http([], method="GET", version="http/1.1")),
    ("rl-space-target", "request line", "space inside the target", http([], method="GET", target="/c d")),
    ("rl-target-version", "request line", "target ending in ' HTTP/1.1' (two versions)", http([], method="GET", target="/c HTTP/1.1")),
    ("rl-nul-target", "request line", "NUL in the target", http([], method="GET", target="/c\x00d")),
    ("rl-trailing-space", "request line", "space after the version", b"GET /c HTTP/1.1 \r\nHost: " + HOST.encode() + b"\r\n\r\n"),
    ("rl-leading-crlf", "request line", "an empty line before the request line", b"\r\n" + http([], method="GET")),
    ("rl-method-nontoken", "request line", "method with '('", http([], method="G(T")),
    ("rl-fragment", "request line", "target with a #fragment", http([], method="GET", target="/c#frag")),
    ("rl-cr-in-line", "request line", "bare CR inside the request line", b"GET /c\rX HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"),
    # Hop-by-hop abuse and upgrades.
    ("conn-te", "hop-by-hop", "Connection: close, Transfer-Encoding (TE listed as hop-by-hop)",
     http(["Transfer-Encoding: chunked", "Connection: close, Transfer-Encoding"], chunked(b"hello"))),
    ("conn-cl", "hop-by-hop", "Connection: Content-Length",
     http(["Content-Length: 5", "Connection: Content-Length"], b"hello")),
    ("conn-host", "hop-by-hop", "Connection: Host", http(["Connection: Host"], method="GET")),
    ("upgrade-refused-then-request", "upgrade", "Upgrade: websocket answered 200, then a raw request on the connection",
     [http(["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="], method="GET"),
      SMUGGLED]),
    ("upgrade-h2c", "upgrade", "Upgrade: h2c with HTTP2-Settings, then a raw request",
     [http(["Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"], method="GET"), SMUGGLED]),
    ("upgrade-with-body", "upgrade", "Upgrade request with a Content-Length body holding a request",
     http(["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
           f"Content-Length: {len(SMUGGLED)}"], SMUGGLED, method="GET")),
    ("head-cl-body", "methods", "HEAD with a Content-Length body holding a request", http([f"Content-Length: {len(SMUGGLED)}"], SMUGGLED, method="HEAD")),
    ("options-cl-body", "methods", "OPTIONS with a Content-Length body holding a request",
     http([f"Content-Length: {len(SMUGGLED)}"], SMUGGLED, method="OPTIONS")),
    ("connect", "methods", "CONNECT to another host", b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n"),
    ("trace", "methods", "TRACE", http([], method="TRACE")),
]
# te-http10 is the CL.TE body on HTTP/1.0, where Transfer-Encoding is faulty framing (RFC 9112 6.1).
CASES = [(n, c, w, (http([f"Content-Length: {len(SMUGGLE_BODY)}", "Transfer-Encoding: chunked"], SMUGGLE_BODY,
                          version="HTTP/1.0") if n == "te-http10" else b)) for n, c, w, b in CASES]


# ---------------------------------------------------------------------------------------------
# A strict HTTP/1.1 request parser (RFC 9112/9110 grammar, no leniency). It says how many
# requests a byte stream holds and every place a lenient parser could read it differently.

TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
REQUEST_LINE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])$")
CHUNK_LINE = re.compile(rb'^([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*[!#$%&\'*+\-.^_`|~0-9A-Za-z]+'
                        rb'(?:[ \t]*=[ \t]*(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*)$')


class Incomplete(Exception):
    pass


def _line(buf, pos, problems, where):
    """One CRLF-terminated line from pos; a bare LF or CR inside is a problem, not an end."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if b"\n" in buf[pos:]:
            problems.append(f"bare LF in {where}")
        raise Incomplete()
    line = buf[pos:end]
    if b"\n" in line:
        problems.append(f"bare LF in {where}")
    if b"\r" in line:
        problems.append(f"bare CR in {where}")
    return line, end + 2


def _fields(buf, pos, problems, where):
    fields = []
    while True:
        line, pos = _line(buf, pos, problems, where)
        if line == b"":
            return fields, pos
        if line[:1] in (b" ", b"\t"):
            problems.append(f"obs-fold in {where}")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or any(c not in TCHAR for c in name):
            problems.append(f"bad field name {name[:40]!r} in {where}")
            continue
        value = value.strip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7f for c in value):
            problems.append(f"control byte in {name.decode('latin-1')} value")
        fields.append((name.decode("latin-1").lower(), value))


def parse_request(buf, pos):
    """-> (request dict, next position). Raises Incomplete when the bytes end inside it."""
    problems = []
    line, pos = _line(buf, pos, problems, "request line")
    m = REQUEST_LINE.match(line)
    if not m:
        problems.append(f"bad request line {line[:60]!r}")
        method, target, minor = line.split(b" ")[0], b"?", 1
    else:
        method, target, minor = m.group(1), m.group(2), int(m.group(3))
    fields, pos = _fields(buf, pos, problems, "header")
    get = lambda n: [v for k, v in fields if k == n]
    hosts = get("host")
    if minor == 1 and len(hosts) != 1:
        problems.append(f"{len(hosts)} Host fields")
    te, cl = get("transfer-encoding"), get("content-length")
    body, chunked = b"", False
    if te:
        chunked = True
        if cl:
            problems.append("both Content-Length and Transfer-Encoding")
        if minor == 0:
            problems.append("Transfer-Encoding on HTTP/1.0")
        if len(te) != 1 or te[0].lower() != b"chunked":
            problems.append(f"Transfer-Encoding not exactly 'chunked': {te!r}")
    if chunked:
        trailers = []
        while True:
            line, pos = _line(buf, pos, problems, "chunk size line")
            cm = CHUNK_LINE.match(line)
            if not cm:
                problems.append(f"bad chunk size line {line[:40]!r}")
                raise_problem = True
                break
            if cm.group(2):
                problems.append("chunk extension forwarded")
            size = int(cm.group(1), 16)
            if size == 0:
                trailers, pos = _fields(buf, pos, problems, "trailer")
                break
            if len(buf) < pos + size + 2:
                raise Incomplete()
            body += buf[pos:pos + size]
            pos += size
            if buf[pos:pos + 2] != b"\r\n":
                problems.append("chunk data not followed by CRLF")
                break
            pos += 2
        if trailers:
            problems.append("trailer fields forwarded: " + ", ".join(k for k, _ in trailers))
    elif cl:
        if len(cl) != 1 or not re.fullmatch(rb"[0-9]{1,18}", cl[0]):
            problems.append(f"Content-Length not one plain number: {cl!r}")
            n = 0
        else:
            n = int(cl[0])
        if len(buf) < pos + n:
            raise Incomplete()
        body, pos = buf[pos:pos + n], pos + n
    return {"method": method.decode("latin-1"), "target": target.decode("latin-1"), "version": f"1.{minor}",
            "fields": [[k, v.decode("latin-1")] for k, v in fields], "body": body.decode("latin-1"),
            "problems": problems}, pos


def parse_stream(buf):
    """Every request in one connection's bytes: (requests, leftover bytes, incomplete?)."""
    out, pos = [], 0
    while pos < len(buf):
        try:
            req, pos = parse_request(buf, pos)
        except Incomplete:
            return out, buf[pos:], True
        req["end"] = pos
        out.append(req)
        if any(p.startswith(("bad request line", "bad chunk", "chunk data not followed")) for p in req["problems"]):
            return out, buf[pos:], False  # the framing is lost: what follows is not parsed
    return out, b"", False


# ---------------------------------------------------------------------------------------------
# The recording upstream.

class Upstream:
    """Accepts on 127.0.0.1, records every connection's bytes under the case being run, answers
    each request it reads (strictly) with 200 and a marker.

    `close` mode: answers each complete request, with `Connection: close`.
    `early` mode: answers each request as soon as its header is complete, before reading its body
    (an origin that ignores a body it does not want, the CL.0 / 0.CL pattern), and keeps the
    connection open: a proxy that then reuses the connection without having sent the whole
    body hands the next client's request to the origin as the rest of that body."""

    def __init__(self, mode="close"):
        self.mode = mode
        self.answers = []   # (conn id, n, request line) of every answer sent
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.case = None
        self.conns = []     # {case, id, bytes, open}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        n = 0
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            rec = {"case": self.case, "id": n, "bytes": b"", "open": True, "sock": s}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(s, rec), daemon=True).start()

    def _serve(self, s, rec):
        answered, start = 0, time.time()
        s.settimeout(UPSTREAM_IDLE if self.mode == "close" else UPSTREAM_LIMIT)
        try:
            while time.time() - start < UPSTREAM_LIMIT:
                if answered and self.mode == "close":
                    s.settimeout(UPSTREAM_AFTER)
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    break
                if not data:
                    break
                rec["bytes"] += data
                reqs, _, _ = parse_stream(rec["bytes"])
                heads = [r["method"] + " " + r["target"] for r in reqs]
                if self.mode == "early":
                    start = reqs[-1]["end"] if reqs else 0
                    if b"\r\n\r\n" in rec["bytes"][start:]:
                        heads.append(rec["bytes"][start:].split(b"\r\n", 1)[0].decode("latin-1"))
                close = b"Connection: close\r\n" if self.mode == "close" else b""
                while answered < len(heads):
                    self.answers.append((rec["id"], answered + 1, heads[answered]))
                    answered += 1
                    body = f"upstream conn {rec['id']} request {answered}\n".encode()
                    s.sendall(b"HTTP/1.1 200 OK\r\nX-Upstream: %d.%d\r\nContent-Length: %d\r\n%s\r\n"
                              % (rec["id"], answered, len(body), close) + body)
        except OSError:
            pass
        finally:
            s.close()
            rec["open"] = False

    def close_all(self):
        """Early mode, after each case: no pooled connection carries over to the next case."""
        for c in list(self.conns):
            if c["open"]:
                try:
                    c["sock"].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def barrier(self, limit=UPSTREAM_LIMIT):
        """Returns once every connection a proxy opened so far is accepted and tagged with the
        case: connections are accepted in order, so the harness's own marked connection comes
        after them (on a loaded machine the accept thread can lag a few cases behind)."""
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"BARRIER\r\n\r\n")
            end = time.time() + limit
            while time.time() < end and not any(c["bytes"].startswith(b"BARRIER") for c in self.conns):
                time.sleep(0.01)
        with self.lock:
            self.conns = [c for c in self.conns if not c["bytes"].startswith(b"BARRIER")]

    def settle(self, limit=UPSTREAM_LIMIT + 1):
        end = time.time() + limit
        while time.time() < end and any(c["open"] for c in self.conns):
            time.sleep(0.05)

    def take(self, case):
        with self.lock:
            mine = [{k: v for k, v in c.items() if k != "sock"} for c in self.conns if c["case"] == case]
            self.conns = [c for c in self.conns if c["case"] != case]
        return mine


# ---------------------------------------------------------------------------------------------
# The client side.

def parse_responses(buf):
    """Status codes and upstream markers of the responses in what the client received."""
    out, pos = [], 0
    while pos < len(buf):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0 or not buf.startswith(b"HTTP/", pos):
            # An HTTP/0.9 answer is the body alone: the origin's marker is in its text.
            m = re.search(rb"upstream conn (\d+) request (\d+)", buf[pos:])
            out.append({"status": None, "raw": buf[pos:pos + 80].decode("latin-1"),
                        "upstream": m and f"{int(m.group(1))}.{int(m.group(2))}"})
            break
        head = buf[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            status = None
        fields = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            fields[k.strip().lower()] = v.strip()
        pos = end + 4
        if status and (100 <= status < 200):
            out.append({"status": status, "interim": True})
            continue
        n = fields.get("content-length")
        if n and n.isdigit():
            pos += int(n)
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    pos = len(buf); break
                size = int(buf[pos:le].split(b";")[0] or b"0", 16)
                pos = le + 2 + size + 2
                if size == 0:
                    break
        else:
            pos = len(buf) if status != 304 and status != 204 else pos
        out.append({"status": status, "upstream": fields.get("x-upstream")})
    return out


def complete_response(buf):
    """Whether buf holds a whole response with a Content-Length body (the canary's)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:end])
    return bool(m) and len(buf) >= end + 4 + int(m.group(1))


def send_case(port, payload, tls=False, one_response=False):
    parts = payload if isinstance(payload, list) else [payload]
    raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_FIRST)
    s = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    got, start, closed = b"", time.time(), False
    try:
        for i, part in enumerate(parts):
            if i:
                # Expect games and post-upgrade bytes: let the proxy answer the first part.
                s.settimeout(0.5)
                try:
                    while True:
                        d = s.recv(65536)
                        if not d:
                            closed = True; break
                        got += d
                except (socket.timeout, ssl.SSLError, OSError):
                    pass
                s.settimeout(CLIENT_IDLE)
            if closed:
                break
            try:
                s.sendall(part)
            except OSError:
                closed = True; break
        while not closed and time.time() - start < CLIENT_LIMIT:
            s.settimeout(CLIENT_IDLE if got else CLIENT_FIRST)
            try:
                d = s.recv(65536)
            except (socket.timeout, ssl.SSLError):
                break
            except OSError:
                closed = True; break
            if not d:
                closed = True; break
            got += d
            if one_response and any(r.get("status") and not r.get("interim") for r in parse_responses(got)) \
                    and complete_response(got):
                break
    finally:
        s.close()
    return got, closed


# ---------------------------------------------------------------------------------------------

FRAMING_FIELDS = {"transfer-encoding", "content-length", "host", "connection", "expect", "upgrade"}


def kind(problem):
    """desync: framing or routing another parser may read differently; invalid: a byte that is
    not allowed but frames nothing; note: legal but worth knowing."""
    if problem.startswith(("chunk extension", "trailer fields")):
        return "note"
    if problem.startswith("control byte in "):
        field = problem[len("control byte in "):-len(" value")].lower()
        return "desync" if field in FRAMING_FIELDS else "invalid"
    return "desync"


def judge(got, conns, canary=None, answers=()):
    """The verdict of one case on one proxy, with what reached the upstream. `canary` (early
    mode): (what the canary's client got, its target)."""
    responses = parse_responses(got)
    finals = [r for r in responses if not r.get("interim")]
    statuses = [r["status"] for r in finals]
    markers = [r.get("upstream") for r in finals if r.get("upstream")]
    ups, reasons, invalid = [], [], []
    for c in conns:
        reqs, left, incomplete = parse_stream(c["bytes"])
        ups.append({"conn": c["id"], "raw": c["bytes"].decode("latin-1"), "requests": reqs,
                    "leftover": left.decode("latin-1"), "incomplete": incomplete,
                    "unfinished": left.split(b"\r\n", 1)[0].decode("latin-1") if incomplete and b"\r\n\r\n" in left else None})
        if canary is None and len(reqs) > 1:
            reasons.append(f"upstream connection {c['id']} carried {len(reqs)} requests")
        for r in reqs:
            if canary is not None and r["target"] == canary[1]:
                continue
            problems = [p for p in r["problems"] if kind(p) == "desync"]
            if problems:
                reasons.append("ambiguous request forwarded: " + "; ".join(problems))
            invalid += [p for p in r["problems"] if kind(p) == "invalid"]
        if left and not incomplete:
            reasons.append(f"upstream connection {c['id']}: {len(left)} bytes after the request that are no request")
    if canary is not None:
        canary_got, target = canary
        cfinal = [r for r in parse_responses(canary_got) if not r.get("interim")]
        cmark = [r.get("upstream") for r in cfinal if r.get("upstream")]
        answered = {f"{cid}.{n}": head for cid, n, head in answers}
        delivered = set(markers) | set(cmark)
        parsed_canary = [q for u in ups for q in u["requests"] if q["target"] == target and not q["problems"]]
        if not parsed_canary:
            reasons.append("the next client's request did not reach the origin as a request of its own")
        if len(cmark) != 1 or not answered.get(cmark[0], "").endswith(" " + target):
            reasons.append(f"the next client got {[answered.get(m, m) for m in cmark] or 'no answer from the origin'}")
        complete = {f"{u['conn']}.{i + 1}" for u in ups for i, _ in enumerate(u["requests"])}
        lost = sorted(m for m in complete - delivered if m in answered)
        if lost:
            reasons.append("the origin answered requests no client received: " + ", ".join(answered[m] for m in lost))
    n_up = sum(len(u["requests"]) for u in ups) - (1 if canary is not None else 0)
    notes = []
    for u in ups:
        for r in u["requests"]:
            notes += [p for p in r["problems"] if kind(p) == "note"]
            if "GET /smuggled" in r["body"]:
                notes.append("a request rides in the forwarded body")
        if u["incomplete"] and u["leftover"]:
            notes.append("upstream left waiting for the rest of a request")
    if n_up <= 0:
        outcome = "reject" if statuses and statuses[0] and statuses[0] >= 400 else "none"
    else:
        outcome = "forward"
    verdict = "DESYNC RISK" if reasons else "INVALID FWD" if invalid else "SAFE"
    return {"statuses": statuses, "markers": markers, "upstream_requests": n_up, "upstream": ups,
            "outcome": outcome, "verdict": verdict, "reasons": reasons + sorted(set(invalid)),
            "notes": sorted(set(notes)), "client_raw": got[:2000].decode("latin-1")}


def cell(r):
    if r is None:
        return "-"
    st = ",".join(str(s) for s in r["statuses"]) or "no answer"
    if r["outcome"] == "reject":
        txt = f"{st} rejected"
    elif r["outcome"] == "none":
        txt = f"{st}, no complete request forwarded"
    else:
        reqs = [q for u in r["upstream"] for q in u["requests"]]
        desc = "+".join(f"{q['method']} {q['target']}" + (f" [{len(q['body'])} B]" if q["body"] else "") for q in reqs)
        txt = f"{st}, fwd {len(reqs)}: {desc}"
    unfinished = [u["unfinished"] for u in r["upstream"] if u.get("unfinished")]
    if unfinished:
        txt += " (and unfinished: " + "; ".join(unfinished) + ")"
    if r["verdict"] != "SAFE":
        txt += f" **{r['verdict']}**"
    return txt.replace("|", "\\|")


STRICT_ORDER = {"reject": 2, "none": 2, "forward": 1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deskgate", default=str(ROOT / "target/debug/deskgate"))
    ap.add_argument("--only", default="deskgate,deskgate-tls,nginx,haproxy")
    ap.add_argument("--early", default="deskgate,nginx,haproxy", help="proxies also run against the early-answering keep-alive origin ('' for none)")
    ap.add_argument("--case", action="append", help="run only these cases")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--date", default=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    a = ap.parse_args()
    cases = [c for c in CASES if not a.case or c[0] in a.case]
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    work = ROOT / "bench/results/tmp-smuggle"
    shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
    cert, key, pem = work / "cert.pem", work / "key.pem", work / "combined.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    pem.write_text(cert.read_text() + key.read_text())
    targets = a.only.split(",") + [f"{t}/early" for t in a.early.split(",") if t]
    for peer in {t.split("/")[0] for t in targets} - {"deskgate", "deskgate-tls"}:
        if not shutil.which(peer):
            sys.exit(f"smuggle: {peer} is not installed (bench/run installs nginx and haproxy; or --only deskgate --early deskgate)")
    systems, upstreams = {}, {}
    versions = {}
    try:
        for t in targets:
            up = Upstream("early" if t.endswith("/early") else "close")
            name = "deskgate" if t.startswith("deskgate") else t.split("/")[0]
            s = bench.System(name, work / t.replace("/", "-"), up.port, cert, key, pem, front_tls=(t == "deskgate-tls"), up_tls=False,
                             binary=a.deskgate)
            s.work.mkdir(parents=True, exist_ok=True)
            s.start()
            systems[t], upstreams[t] = s, up
        versions = {
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
            "deskgate": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
        }
        results = {t: {} for t in targets}

        def run_target(t):
            for i, (name, cls, why, payload) in enumerate(cases):
                up = upstreams[t]
                up.case = name
                got, _ = send_case(systems[t].port, payload, tls=(t == "deskgate-tls"))
                canary = None
                if up.mode == "early":
                    # The next client's request: it must reach the origin as its own request and
                    # get its own answer, whatever the case left on a pooled connection.
                    target = f"/canary-{i}"
                    canary_got, _ = send_case(systems[t].port, http([], method="GET", target=target), one_response=True)
                    canary = (canary_got, target)
                up.barrier()
                if up.mode == "early":
                    up.close_all()
                up.settle()
                up.case = None
                results[t][name] = judge(got, up.take(name), canary, [a for a in up.answers])
                r = results[t][name]
                print(f"{t:13} {name:28} {cell(r)}", flush=True)

        threads = [threading.Thread(target=run_target, args=(t,)) for t in targets]
        for th in threads: th.start()
        for th in threads: th.join()
    finally:
        for s in systems.values():
            s.stop()
    write_report(cases, targets, results, versions, Path(a.out), a.date)


# Why deskgate still differs from the strictest peer on these rows (each checked by hand).
EXPLAINED = {
    "chunk-ext-lf": "Pingora's chunk parser (httparse::parse_chunk_size) skips a bare LF inside a chunk extension; "
                    "deskgate re-chunks what it forwards, so the origin never sees the extension and reads exactly "
                    "the 5 bytes deskgate read. Refusing it needs a Pingora change (reject CR/LF inside extensions "
                    "where pingora-core's body.rs already counts extension bytes); request_filter runs before the body.",
    "long-header-9k": "nginx's default large_client_header_buffers is 8 KiB; deskgate's limit is max_header_bytes "
                      "(64 KiB default, configurable). A size limit, not a parsing difference.",
    "rl-space-target": "Pingora percent-encodes bytes that are illegal in a request target (escape_illegal_request_line) "
                       "instead of refusing: the origin reads one request with target /c%20d, as if the client had "
                       "encoded it. Refusing needs a Pingora option to skip that escape; the escaped target cannot be "
                       "told apart from a client's own %20 afterwards.",
    "rl-nul-target": "As rl-space-target: forwarded as /c%00d, one request with a legal target.",
    "rl-cr-in-line": "As rl-space-target: forwarded as /c%0DX, one request with a legal target.",
    "rl-fragment": "deskgate forwards the target without its #fragment (a client never sends one); HAProxy refuses, "
                   "nginx forwards it raw. One request either way.",
}


def table(rows, targets):
    md = ["| # | case | class | what | " + " | ".join(targets) + " |", "|---|---|---|---|" + "---|" * len(targets)]
    for i, (name, cls, why, row) in enumerate(rows, 1):
        md.append(f"| {i} | `{name}` | {cls} | {why.replace('|', '/')} | " + " | ".join(cell(row.get(t)) for t in targets) + " |")
    return md


def write_report(cases, targets, results, versions, out, date):
    close_targets = [t for t in targets if not t.endswith("/early")]
    early_targets = [t for t in targets if t.endswith("/early")]
    peers = [t for t in close_targets if not t.startswith("deskgate")]
    rows, less_strict, flagged = [], [], []
    for name, cls, why, payload in cases:
        row = {t: results[t].get(name) for t in targets}
        rows.append((name, cls, why, row))
        d = row.get("deskgate")
        strictest = max((STRICT_ORDER[row[p]["outcome"]] for p in peers if row.get(p)), default=0)
        if d and STRICT_ORDER[d["outcome"]] < strictest:
            less_strict.append((name, [p for p in peers if row.get(p) and STRICT_ORDER[row[p]["outcome"]] == strictest]))
        for t, r in row.items():
            if r and r["verdict"] != "SAFE":
                flagged.append((name, t, r["verdict"], r["reasons"]))
    count = lambda t, f: sum(1 for _, _, _, row in rows if row.get(t) and f(row[t]))
    md = [f"# Request-smuggling differential, {date}", "",
          f"`bench/smuggle.py`: {len(cases)} ambiguous or malformed HTTP/1.1 requests, each on a fresh TCP connection "
          "through each proxy (plain HTTP listeners; `deskgate-tls` is deskgate behind its TLS listener) to a recording "
          "origin in the script that parses what arrives strictly (RFC 9112 without its leniencies) and answers each "
          "request with `200`, a marker naming the connection, and `Connection: close`. The `/early` columns repeat the "
          "run against an origin that answers as soon as a request's header is complete, before reading its body, and "
          "keeps the connection open (the CL.0 / 0.CL pattern); after each case a second client sends "
          "`GET /canary-N`, which must reach the origin as a request of its own and get its own answer.", "",
          "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()), "",
          "A cell: the statuses the client got, then `rejected` (the proxy answered itself, nothing complete reached "
          "the origin) or `fwd N: ...` (the requests the origin read: method, target, body size). "
          "**DESYNC RISK**: an origin connection held more than one request (close mode), an ambiguous request "
          "(both framings, a Transfer-Encoding other than `chunked`, a second Content-Length, bare CR/LF, obs-fold, "
          "a non-token name, a Host count other than one, a control byte in a framing field), bytes after the request "
          "that are no request, or (early mode) a next client's request that did not arrive as its own or got "
          "another's answer. **INVALID FWD**: a byte the grammar forbids (a control byte) forwarded in a field that "
          "frames nothing.", "",
          "| | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets),
          "| DESYNC RISK | " + " | ".join(str(count(t, lambda r: r["verdict"] == "DESYNC RISK")) for t in targets) + " |",
          "| INVALID FWD | " + " | ".join(str(count(t, lambda r: r["verdict"] == "INVALID FWD")) for t in targets) + " |",
          "| refused, or nothing complete forwarded | " + " | ".join(str(count(t, lambda r: r["outcome"] != "forward")) for t in targets) + " |", "",
          f"Rows where deskgate forwards and the strictest peer refuses: {len(less_strict)}.", ""]
    for name, who in less_strict:
        md.append(f"- `{name}` (refused by {', '.join(who)}): " + EXPLAINED.get(name, "**not explained**"))
    md += ["", "## Every case (origin answers and closes)", ""] + table(rows, close_targets)
    if early_targets:
        md += ["", "## Every case, early-answering keep-alive origin, then a next client", ""] + table(rows, early_targets)
    if flagged:
        md += ["", "## DESYNC RISK and INVALID FWD details", ""]
        for name, t, verdict, reasons in flagged:
            md.append(f"- `{name}` via {t} ({verdict}): " + "; ".join(reasons))
    notes = {}
    for name, _, _, row in rows:
        for t, r in row.items():
            for n in (r or {}).get("notes", []):
                notes.setdefault((name, n), []).append(t)
    if notes:
        md += ["", "## Notes (legal, not desyncs)", ""]
        for (name, n), ts in notes.items():
            md.append(f"- `{name}`: {n} ({', '.join(ts)})")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"smuggle-{date}.md").write_text("\n".join(md) + "\n")
    def short(v, n=600):
        """Long strings (the 70 KiB header case) cut in the JSON; the md has what matters."""
        if isinstance(v, str):
            return v if len(v) <= n else v[:n] + f"...[{len(v) - n} more]"
        if isinstance(v, dict):
            # A request's fields are in its connection's raw bytes already.
            return {k: short(x, n) for k, x in v.items() if k != "fields"}
        if isinstance(v, list):
            return [short(x, n) for x in v[:40]]
        return v
    js = {"date": date, "versions": versions, "targets": targets,
          "cases": [{"name": n, "class": c, "what": w,
                     "request": short((b"".join(p) if isinstance(p, list) else p).decode("latin-1"), 2000),
                     "results": {t: short(results[t].get(n)) for t in targets}} for n, c, w, p in cases]}
    (out / f"smuggle-{date}.json").write_text(json.dumps(js, separators=(",", ":")) + "\n")
    summary = {t: count(t, lambda r: r["verdict"] == "DESYNC RISK") for t in targets}
    print(f"wrote {out}/smuggle-{date}.md: DESYNC RISK rows {summary}, deskgate forwards where a peer refuses: "
          f"{[n for n, _ in less_strict]}")


if __name__ == "__main__":
    main()
