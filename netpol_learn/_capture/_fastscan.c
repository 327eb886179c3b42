/*
 * _fastscan: the capture stage's per-packet hot path in C.
 *
 * Why this exists: walking pcap record headers (netpol_learn/_capture/_files.py) and decoding the
 * headers of every packet (netpol_learn/_capture/_decode.py) are the two loops that run once per
 * packet. In Python/numpy they cost about 0.3 s each per million packets, a third of what
 * `netpol-learn capture` may spend in all to read a million packets a second in one process; here
 * they cost a few hundredths of a second together. A third function, parse_dns, is the DNS message
 * parser of _dns.py (run once per distinct DNS message, which on a busy node is hundreds of
 * thousands of times).
 *
 * This is an optional accelerator, never the definition: the numpy code in _decode.py (decode), the
 * Python walker in _accel.py (_walk_pcap_python) and the DNS parser in _dns.py (parse,
 * parse_tcp_segment) are the reference implementations, and this file must give exactly their
 * results, bit for bit, for every input (tests/test_fastscan.py and tests/test_dns_fastscan.py
 * check that, including on random bytes). When the two disagree, this file is wrong. Any change
 * to _decode.decode or to _dns.py must be made here too. _accel.py picks this module when it was built and
 * NETPOL_LEARN_PURE_PYTHON is not set, and falls back to the reference code otherwise.
 *
 * Only the CPython C API is used (no numpy headers): arrays come in and go out through the buffer
 * protocol. Reads are always inside the buffer, whatever the packet bytes say: like the numpy
 * decoder, every read offset is clamped to len(buffer) - 8 (so a read of up to 8 bytes fits).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Constants shared with _decode.py                                                          */

enum { OK = 0, NON_IP = 1, TRUNCATED = 2, LOOPBACK = 3, ICMP_CONTROL = 4, FRAGMENT = 5, TUNNEL_TOO_DEEP = 6 };
enum { P_ICMP = 1, P_TCP = 6, P_UDP = 17, P_ICMPV6 = 58, P_SCTP = 132 };
enum { EV_SYN = 1, EV_SYNACK = 2, EV_SCTP = 4, EV_ICMP = 8, EV_DNS = 16 };
enum { LINK_ETHERNET = 1, LINK_RAW = 101 };
#define MAX_TUNNEL_DEPTH 3
#define IPV4_MAPPED UINT64_C(0xFFFF00000000)
#define M64 UINT64_C(0x9E3779B97F4A7C15)

/* Offsets and lengths beyond this are refused (ValueError), so that no sum overflows. */
#define MAX_OFFSET ((int64_t)1 << 48)

/* A hint to bring memory into the cache ahead of use (never faults, never changes results). */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(addr) __builtin_prefetch(addr)
#else
#define PREFETCH(addr) ((void)0)
#endif
#define CACHE_LINE 64
/* How far ahead of its position walk_pcap prefetches: each record header's position depends on
 * the one before, so without this every header is a full memory latency (about 100 ns). */
#define WALK_PREFETCH_BYTES 4096
/* decode prefetches the first two cache lines of the packet this many packets ahead. */
#define DECODE_PREFETCH_PACKETS 8

/* walk_pcap's reasons for stopping */
enum { WALK_LIMIT = 0, WALK_NEED_DATA = 1, WALK_OVER_SNAPLEN = 2 };

/* ---------------------------------------------------------------------------------------- */
/* Reads, clamped like _decode._Bytes: the offset is first limited to len - 8.              */

typedef struct {
    const uint8_t *p;
    int64_t limit; /* len - 8 >= 0 */
} Bytes;

static inline const uint8_t *at_(const Bytes *v, int64_t at) { return v->p + (at < v->limit ? at : v->limit); }
static inline int64_t rd8(const Bytes *v, int64_t at) { return at_(v, at)[0]; }
static inline int64_t rd16(const Bytes *v, int64_t at)
{
    const uint8_t *q = at_(v, at);
    return ((int64_t)q[0] << 8) | q[1];
}
static inline int64_t rd32(const Bytes *v, int64_t at)
{
    const uint8_t *q = at_(v, at);
    return ((int64_t)q[0] << 24) | ((int64_t)q[1] << 16) | ((int64_t)q[2] << 8) | q[3];
}
static inline int64_t rd32le(const Bytes *v, int64_t at)
{
    const uint8_t *q = at_(v, at);
    return ((int64_t)q[3] << 24) | ((int64_t)q[2] << 16) | ((int64_t)q[1] << 8) | q[0];
}
static inline uint64_t rd64(const Bytes *v, int64_t at)
{
    const uint8_t *q = at_(v, at);
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | q[i];
    return x;
}

static inline uint64_t mix1(uint64_t h, uint64_t x)
{
    h = (h ^ x) * M64;
    return h ^ (h >> 29);
}

/* _decode._payload_word: up to 8 payload bytes at `at` (before ipend) as an integer, else 0. */
static inline uint64_t payload_word(const Bytes *v, int64_t at, int64_t ipend)
{
    int64_t avail = ipend - at;
    if (avail <= 0)
        return 0;
    if (avail > 8)
        avail = 8;
    return rd64(v, at) >> ((8 - avail) * 8);
}

static inline int64_t family_to_ethertype(int64_t fam)
{
    if (fam == 2)
        return 0x0800;
    if (fam == 10 || fam == 24 || fam == 28 || fam == 30)
        return 0x86DD;
    return 0;
}

static inline int is_ipv6_extension(int64_t nh)
{
    switch (nh) {
    case 0: case 43: case 44: case 51: case 60: case 135: case 139: case 140:
        return 1;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* One layer: _decode._decode_layer for one packet                                           */

typedef struct {
    int64_t status;
    uint64_t src_hi, src_lo, dst_hi, dst_lo;
    int64_t proto, sport, dport, iplen, ipid, frag, ev_src, ev_dst;
    uint64_t fingerprint;
    int64_t tcp_seq, tcp_ack, tcp_next, tcp_flags, dns_at, dns_end;
    int64_t tunnel, inner_off, inner_link;
} Layer;

static void decode_layer(const Bytes *v, int64_t off, int64_t end, int64_t link, Layer *L)
{
    /* link layer (_decode._link_layer) */
    int64_t l3 = off, et = 0;
    if (link == LINK_ETHERNET) {
        int64_t e = rd16(v, off + 12), at = off + 14;
        for (int i = 0; i < 2; i++) { /* 802.1Q, QinQ (802.1ad and the older 0x9100) */
            if (e == 0x8100 || e == 0x88A8 || e == 0x9100) {
                e = rd16(v, at + 2);
                at += 4;
            }
        }
        et = e;
        l3 = at;
    } else if (link == 113) {
        et = rd16(v, off + 14);
        l3 = off + 16;
    } else if (link == 276) {
        et = rd16(v, off);
        l3 = off + 20;
    } else if (link == 12 || link == 14 || link == 101 || link == 228 || link == 229) {
        int64_t version = rd8(v, off) >> 4;
        et = version == 4 ? 0x0800 : version == 6 ? 0x86DD : 0;
    } else if (link == 0) {
        int64_t fam = rd32le(v, off);
        if (fam > 0xFFFF)
            fam = rd32(v, off);
        et = family_to_ethertype(fam);
        l3 = off + 4;
    } else if (link == 108) {
        et = family_to_ethertype(rd32(v, off));
        l3 = off + 4;
    }

    int64_t status = NON_IP;
    uint64_t src_hi = 0, src_lo = 0, dst_hi = 0, dst_lo = 0;
    int64_t proto = 0, iplen = 0, ipid = 0, frag = 0, l4 = 0;
    if (l3 >= end)
        status = TRUNCATED;

    if (et == 0x0800) {
        if (l3 + 20 <= end) {
            int64_t o = l3, b0 = rd8(v, o);
            int64_t ihl = (b0 & 15) * 4, total = rd16(v, o + 2);
            int good = (b0 >> 4) == 4 && ihl >= 20 && o + ihl <= end && total >= ihl;
            status = good ? OK : TRUNCATED;
            src_lo = IPV4_MAPPED | (uint64_t)rd32(v, o + 12);
            dst_lo = IPV4_MAPPED | (uint64_t)rd32(v, o + 16);
            proto = rd8(v, o + 9);
            iplen = total;
            ipid = rd16(v, o + 4);
            int64_t fragword = rd16(v, o + 6), offset = fragword & 0x1FFF;
            frag = offset > 0 ? offset : (fragword & 0x2000) ? -1 : 0;
            l4 = o + ihl;
        } else {
            status = TRUNCATED;
        }
    } else if (et == 0x86DD) {
        if (l3 + 40 <= end) {
            int64_t o = l3;
            status = (rd8(v, o) >> 4) == 6 ? OK : TRUNCATED;
            int64_t plen = rd16(v, o + 4);
            iplen = plen > 0 ? plen + 40 : end - o; /* 0: jumbogram */
            src_hi = rd64(v, o + 8);
            src_lo = rd64(v, o + 16);
            dst_hi = rd64(v, o + 24);
            dst_lo = rd64(v, o + 32);
            int64_t nh = rd8(v, o + 6), at = o + 40;
            for (int i = 0; i < 8; i++) {
                if (!is_ipv6_extension(nh) || status != OK)
                    break;
                if (at + 8 > end)
                    status = TRUNCATED; /* this header is still read, like the reference */
                int64_t size;
                if (nh == 44) {
                    int64_t fw = rd16(v, at + 2);
                    frag = (fw >> 3) > 0 ? (fw >> 3) : (fw & 1) ? -1 : 0;
                    ipid = rd32(v, at + 4);
                    size = 8;
                } else if (nh == 51) {
                    size = (rd8(v, at + 1) + 2) * 4;
                } else {
                    size = (rd8(v, at + 1) + 1) * 8;
                }
                nh = rd8(v, at);
                at += size;
            }
            proto = nh;
            l4 = at;
        } else {
            status = TRUNCATED;
        }
    }

    int ok = status == OK;
    int64_t ipend = l3 + iplen < end ? l3 + iplen : end;

    /* Loopback */
    int is_v4 = src_hi == 0;
    int lo_v4 = ((src_lo >> 24) & 0xFFFFFF) == 0xFFFF7F || ((dst_lo >> 24) & 0xFFFFFF) == 0xFFFF7F;
    int lo_v6 = (src_hi == 0 && src_lo == 1) || (dst_hi == 0 && dst_lo == 1);
    if (ok && ((is_v4 && lo_v4) || lo_v6))
        status = LOOPBACK;
    if (status == OK && frag > 0)
        status = FRAGMENT;
    ok = status == OK;

    int64_t sport = 0, dport = 0, ev_src = 0, ev_dst = 0;
    int64_t seq = 0, ack = 0, flags = 0, tcp_next = 0;
    int64_t pay = l4;

    if (ok && proto == P_TCP) {
        if (l4 + 20 > ipend) {
            status = TRUNCATED;
        } else {
            int64_t o = l4;
            sport = rd16(v, o);
            dport = rd16(v, o + 2);
            seq = rd32(v, o + 4);
            ack = rd32(v, o + 8);
            int64_t fl = rd8(v, o + 13);
            flags = fl;
            pay = o + (rd8(v, o + 12) >> 4) * 4;
            /* SYN and FIN each take one sequence number. */
            int64_t seglen = (l3 + iplen) - pay + ((fl & 0x02) != 0) + (fl & 0x01);
            tcp_next = (int64_t)((uint64_t)(seq + seglen) & 0xFFFFFFFFu);
            if ((fl & 0x12) == 0x02)
                ev_src |= EV_SYN;
            if ((fl & 0x12) == 0x12)
                ev_dst |= EV_SYNACK;
        }
    } else if (ok && proto == P_UDP) {
        if (l4 + 8 > ipend) {
            status = TRUNCATED;
        } else {
            sport = rd16(v, l4);
            dport = rd16(v, l4 + 2);
            pay = l4 + 8;
        }
    } else if (ok && proto == P_SCTP) {
        if (l4 + 12 > ipend) {
            status = TRUNCATED;
        } else {
            int64_t o = l4;
            sport = rd16(v, o);
            dport = rd16(v, o + 2);
            int64_t chunk = o + 13 <= ipend ? rd8(v, o + 12) : 0;
            if (chunk == 1)
                ev_src |= EV_SCTP; /* INIT */
            if (chunk == 2)
                ev_dst |= EV_SCTP; /* INIT ACK */
            seq = rd32(v, o + 4); /* verification tag */
            pay = o + 12;
        }
    } else if (ok && (proto == P_ICMP || proto == P_ICMPV6)) {
        if (l4 + 8 > ipend) {
            status = TRUNCATED;
        } else {
            int64_t o = l4, typ = rd8(v, o);
            int v6msg = proto == P_ICMPV6;
            int request = v6msg ? typ == 128 : typ == 8;
            int reply = v6msg ? typ == 129 : typ == 0;
            int64_t ident = rd16(v, o + 4);
            if (request || reply) {
                sport = ident;
                dport = ident;
            } else {
                status = ICMP_CONTROL;
            }
            if (request)
                ev_src |= EV_ICMP;
            if (reply)
                ev_dst |= EV_ICMP;
            seq = rd16(v, o + 6) | (typ << 16);
            pay = o + 8;
        }
    }
    ok = status == OK;

    /* Tunnels */
    int64_t tunnel = 0, inner_off = 0, inner_link = 0;
    if (ok && proto == P_UDP) {
        if (dport == 4789 || dport == 8472) {
            if (pay + 8 + 14 <= end && (rd8(v, pay) & 0x08) != 0) { /* the "VNI present" flag */
                tunnel = 1;
                inner_off = pay + 8;
                inner_link = LINK_ETHERNET;
            }
        } else if (dport == 6081) {
            if (pay + 8 <= end) {
                int64_t g0 = rd8(v, pay), ptype = rd16(v, pay + 2);
                if ((g0 >> 6) == 0 && (ptype == 0x6558 || ptype == 0x0800 || ptype == 0x86DD)) {
                    tunnel = 2;
                    inner_off = pay + 8 + (g0 & 0x3F) * 4;
                    inner_link = ptype == 0x6558 ? LINK_ETHERNET : LINK_RAW;
                }
            }
        } else if (dport == 8285) {
            if (pay + 20 <= end) {
                int64_t version = rd8(v, pay) >> 4;
                if (version == 4 || version == 6) {
                    tunnel = 3;
                    inner_off = pay;
                    inner_link = LINK_RAW;
                }
            }
        }
    } else if (ok && (proto == 4 || proto == 41)) {
        if (l4 + 20 <= end) {
            tunnel = proto == 4 ? 4 : 5;
            inner_off = l4;
            inner_link = LINK_RAW;
        }
    } else if (ok && proto == 47) {
        if (l4 + 4 <= end) {
            int64_t gf = rd16(v, l4), ptype = rd16(v, l4 + 2);
            int64_t hl = 4 + 4 * (((gf >> 15) | (gf >> 14)) & 1) + 4 * ((gf >> 13) & 1) + 4 * ((gf >> 12) & 1);
            if ((gf & 7) == 0 && (ptype == 0x6558 || ptype == 0x0800 || ptype == 0x86DD)) {
                tunnel = 6;
                inner_off = l4 + hl;
                inner_link = ptype == 0x6558 ? LINK_ETHERNET : LINK_RAW;
            }
        }
        if (tunnel == 0)
            status = NON_IP; /* GRE carrying something other than IP */
    }

    /* DNS: where the message starts, and its QR bit as direction evidence. */
    int64_t dns_at = -1, dns_end = ipend;
    if (ok && tunnel == 0 && (proto == P_UDP || proto == P_TCP) && (sport == 53 || dport == 53) &&
        pay < ipend) { /* a bare SYN, ACK or FIN carries no message */
        dns_at = pay;
        int64_t at = pay + (proto == P_TCP ? 2 : 0);
        if (at + 12 <= ipend) {
            if ((rd8(v, at + 2) >> 7) == 0)
                ev_src |= EV_DNS;
            else
                ev_dst |= EV_DNS;
        }
    }

    /* Fingerprint: the same values in the same order as _decode._mix. */
    uint64_t h = (uint64_t)proto;
    h = mix1(h, (uint64_t)iplen);
    h = mix1(h, (uint64_t)ipid);
    h = mix1(h, (uint64_t)frag);
    h = mix1(h, (uint64_t)seq);
    h = mix1(h, (uint64_t)ack);
    h = mix1(h, (uint64_t)flags);
    h = mix1(h, payload_word(v, pay, ipend));
    h = mix1(h, payload_word(v, pay + 8, ipend));

    L->status = status;
    L->src_hi = src_hi;
    L->src_lo = src_lo;
    L->dst_hi = dst_hi;
    L->dst_lo = dst_lo;
    L->proto = proto;
    L->sport = sport;
    L->dport = dport;
    L->iplen = iplen;
    L->ipid = ipid;
    L->frag = frag;
    L->ev_src = ev_src;
    L->ev_dst = ev_dst;
    L->fingerprint = h;
    L->tcp_seq = proto == P_TCP ? seq : 0;
    L->tcp_ack = proto == P_TCP ? ack : 0;
    L->tcp_next = tcp_next;
    L->tcp_flags = flags; /* set only for a TCP header read, like _decode's */
    L->dns_at = dns_at;
    L->dns_end = dns_end;
    L->tunnel = tunnel;
    L->inner_off = inner_off;
    L->inner_link = inner_link;
}

/* ---------------------------------------------------------------------------------------- */
/* Buffer helpers                                                                            */

/* The format of an integer buffer of `size` bytes, ignoring byte-order prefixes ('@', '=', '<'
 * on a little-endian machine); NULL format means unsigned bytes. */
static int int_format_ok(const Py_buffer *b, Py_ssize_t size, int is_signed)
{
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=')
        f++;
#if PY_LITTLE_ENDIAN
    else if (*f == '<')
        f++;
#else
    else if (*f == '>' || *f == '!')
        f++;
#endif
    if (f[0] == '\0' || f[1] != '\0' || b->itemsize != size)
        return 0;
    if (size == 1)
        return is_signed ? f[0] == 'b' : (f[0] == 'B' || f[0] == 'b');
    if (size == 8)
        return is_signed ? (f[0] == 'q' || f[0] == 'l') : (f[0] == 'Q' || f[0] == 'L' || f[0] == 'q' || f[0] == 'l');
    return 0;
}

/* Get an integer array buffer of at least n items; writable for outputs. */
static int get_array(PyObject *obj, Py_buffer *b, Py_ssize_t size, int is_signed, int writable, Py_ssize_t n,
                     const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, b, flags) < 0)
        return -1;
    if (!int_format_ok(b, size, is_signed)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of %s%zd-byte integers (format %s)", name,
                     is_signed ? "signed " : "", size, b->format ? b->format : "B");
        PyBuffer_Release(b);
        return -1;
    }
    if (b->len / size < n) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items, need at least %zd", name, b->len / size, n);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* walk_pcap                                                                                 */

PyDoc_STRVAR(walk_pcap_doc,
"walk_pcap(buffer, pos, n, big_endian, snaplen, max_records, out_offsets,\n"
"          out_sec=None, out_frac=None, out_caplen=None) -> (count, pos, reason)\n\n"
"Walk classic pcap record headers in buffer[0:n] from pos, writing each record's header offset\n"
"into out_offsets (int64, at least max_records items) and, when given, its seconds, fraction of a\n"
"second and captured length into out_sec, out_frac, out_caplen (int64 arrays of the same size).\n"
"Stops when count == max_records (WALK_LIMIT), when the next record header or record does not\n"
"fit in n (WALK_NEED_DATA), or at a record whose captured length is over snaplen or over its\n"
"original length (WALK_OVER_SNAPLEN; that record is at the returned pos and was not consumed).");

static inline uint32_t rd32_order(const uint8_t *q, int big)
{
    return big ? ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3]
               : ((uint32_t)q[3] << 24) | ((uint32_t)q[2] << 16) | ((uint32_t)q[1] << 8) | q[0];
}

static PyObject *walk_pcap(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buffer", "pos", "n", "big_endian", "snaplen", "max_records", "out_offsets",
                             "out_sec", "out_frac", "out_caplen", NULL};
    PyObject *buf_obj, *out_obj, *hdr_obj[3] = {Py_None, Py_None, Py_None};
    Py_ssize_t pos, n, max_records;
    int big;
    unsigned long long snaplen;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnpKnO|OOO:walk_pcap", kwlist, &buf_obj, &pos, &n, &big,
                                     &snaplen, &max_records, &out_obj, &hdr_obj[0], &hdr_obj[1], &hdr_obj[2]))
        return NULL;
    Py_buffer buf, out, hdr[3];
    int have_hdr = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || n < 0 || n > buf.len || max_records < 0) {
        PyBuffer_Release(&buf);
        return PyErr_Format(PyExc_ValueError, "walk_pcap: need 0 <= pos, 0 <= n <= len(buffer) (%zd), 0 <= max_records",
                            buf.len);
    }
    if (get_array(out_obj, &out, 8, 1, 1, max_records, "out_offsets") < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    int with_headers = hdr_obj[0] != Py_None || hdr_obj[1] != Py_None || hdr_obj[2] != Py_None;
    if (with_headers) {
        const char *names[3] = {"out_sec", "out_frac", "out_caplen"};
        for (; have_hdr < 3; have_hdr++)
            if (get_array(hdr_obj[have_hdr], &hdr[have_hdr], 8, 1, 1, max_records, names[have_hdr]) < 0)
                goto done;
    }
    const uint8_t *p = buf.buf;
    int64_t *offs = out.buf;
    int64_t *sec = with_headers ? hdr[0].buf : NULL, *frac = with_headers ? hdr[1].buf : NULL,
            *caplen = with_headers ? hdr[2].buf : NULL;
    Py_ssize_t count = 0, fetched = pos;
    int reason = WALK_LIMIT;
    Py_BEGIN_ALLOW_THREADS
    while (count < max_records) {
        Py_ssize_t ahead = n - pos > WALK_PREFETCH_BYTES ? pos + WALK_PREFETCH_BYTES : n;
        for (; fetched < ahead; fetched += CACHE_LINE)
            PREFETCH(p + fetched);
        if (pos > n - 16) { /* pos + 16 > n, written so that it cannot overflow */
            reason = WALK_NEED_DATA;
            break;
        }
        uint32_t incl = rd32_order(p + pos + 8, big);
        if (incl > snaplen || incl > rd32_order(p + pos + 12, big)) {
            reason = WALK_OVER_SNAPLEN;
            break;
        }
        Py_ssize_t end = pos + 16 + (Py_ssize_t)incl;
        if (end > n) {
            reason = WALK_NEED_DATA;
            break;
        }
        if (with_headers) {
            sec[count] = rd32_order(p + pos, big);
            frac[count] = rd32_order(p + pos + 4, big);
            caplen[count] = incl;
        }
        offs[count++] = pos;
        pos = end;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nni", count, pos, reason);
done:
    while (have_hdr > 0)
        PyBuffer_Release(&hdr[--have_hdr]);
    PyBuffer_Release(&out);
    PyBuffer_Release(&buf);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* decode                                                                                    */

/* Output arrays, in this order (itemsize, signed). */
enum {
    O_STATUS, O_SRC_HI, O_SRC_LO, O_DST_HI, O_DST_LO, O_PROTO, O_SPORT, O_DPORT, O_IPLEN, O_IPID, O_FRAG,
    O_EV_SRC, O_EV_DST, O_FINGERPRINT, O_TCP_SEQ, O_TCP_ACK, O_TCP_NEXT, O_TCP_FLAGS, O_DNS_AT, O_DNS_END, O_TUNNEL,
    O_OUTER_SRC_HI, O_OUTER_SRC_LO, O_OUTER_DST_HI, O_OUTER_DST_LO, N_OUT
};
static const char *const out_names[N_OUT] = {
    "status", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport", "dport", "iplen", "ipid", "frag",
    "ev_src", "ev_dst", "fingerprint", "tcp_seq", "tcp_ack", "tcp_next", "tcp_flags", "dns_at", "dns_end", "tunnel",
    "outer_src_hi", "outer_src_lo", "outer_dst_hi", "outer_dst_lo",
};

static int out_itemsize(int i) { return (i == O_STATUS || i == O_TUNNEL) ? 1 : 8; }
static int out_signed(int i)
{
    return !(i == O_SRC_HI || i == O_SRC_LO || i == O_DST_HI || i == O_DST_LO || i == O_FINGERPRINT ||
             i >= O_OUTER_SRC_HI);
}

PyDoc_STRVAR(decode_doc,
"decode(buffer, off, caplen, link, out) -> None\n\n"
"_decode.decode for one chunk: off, caplen, link are int64 arrays of n packets; out is a sequence of\n"
"25 writable arrays of at least n items, in the order of OUTPUTS (int8 status and tunnel, uint64\n"
"addresses and fingerprint, int64 for the rest). Every element of every output is written.\n"
"Raises ValueError when len(buffer) < 8 or an offset is negative or beyond 2**48.");

static PyObject *decode(PyObject *self, PyObject *args)
{
    PyObject *buf_obj, *off_obj, *cap_obj, *link_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO:decode", &buf_obj, &off_obj, &cap_obj, &link_obj, &out_obj))
        return NULL;
    Py_buffer buf, in[3], out[N_OUT];
    int have_in = 0, have_out = 0;
    PyObject *result = NULL, *seq = NULL;

    if (PyObject_GetBuffer(buf_obj, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *ins[3] = {off_obj, cap_obj, link_obj};
    const char *in_names[3] = {"off", "caplen", "link"};
    for (; have_in < 3; have_in++)
        if (get_array(ins[have_in], &in[have_in], 8, 1, 0, 0, in_names[have_in]) < 0)
            goto done;
    Py_ssize_t n = in[0].len / 8;
    if (in[1].len / 8 != n || in[2].len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "decode: off, caplen and link differ in length");
        goto done;
    }
    seq = PySequence_Fast(out_obj, "decode: out must be a sequence of arrays");
    if (!seq)
        goto done;
    if (PySequence_Fast_GET_SIZE(seq) != N_OUT) {
        PyErr_Format(PyExc_ValueError, "decode: out must hold %d arrays", N_OUT);
        goto done;
    }
    for (; have_out < N_OUT; have_out++) {
        int i = have_out;
        if (get_array(PySequence_Fast_GET_ITEM(seq, i), &out[i], out_itemsize(i), out_signed(i), 1, n, out_names[i]) < 0)
            goto done;
    }
    if (buf.len < 8) {
        PyErr_SetString(PyExc_ValueError, "decode: the buffer must hold at least 8 bytes");
        goto done;
    }
    const int64_t *off = in[0].buf, *caplen = in[1].buf, *link = in[2].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (off[i] < 0 || off[i] > MAX_OFFSET || caplen[i] < -MAX_OFFSET || caplen[i] > MAX_OFFSET) {
            PyErr_Format(PyExc_ValueError, "decode: packet %zd has offset %lld and length %lld", i, (long long)off[i],
                         (long long)caplen[i]);
            goto done;
        }
    }

    Bytes v = {(const uint8_t *)buf.buf, (int64_t)buf.len - 8};
    int8_t *status = out[O_STATUS].buf, *tunnel = out[O_TUNNEL].buf;
    uint64_t *src_hi = out[O_SRC_HI].buf, *src_lo = out[O_SRC_LO].buf, *dst_hi = out[O_DST_HI].buf,
             *dst_lo = out[O_DST_LO].buf, *fingerprint = out[O_FINGERPRINT].buf;
    uint64_t *osh = out[O_OUTER_SRC_HI].buf, *osl = out[O_OUTER_SRC_LO].buf, *odh = out[O_OUTER_DST_HI].buf,
             *odl = out[O_OUTER_DST_LO].buf;
    int64_t *proto = out[O_PROTO].buf, *sport = out[O_SPORT].buf, *dport = out[O_DPORT].buf,
            *iplen = out[O_IPLEN].buf, *ipid = out[O_IPID].buf, *frag = out[O_FRAG].buf,
            *ev_src = out[O_EV_SRC].buf, *ev_dst = out[O_EV_DST].buf, *tcp_seq = out[O_TCP_SEQ].buf,
            *tcp_ack = out[O_TCP_ACK].buf, *tcp_next = out[O_TCP_NEXT].buf, *tcp_flags = out[O_TCP_FLAGS].buf,
            *dns_at = out[O_DNS_AT].buf,
            *dns_end = out[O_DNS_END].buf;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Layer L;
        if (i + DECODE_PREFETCH_PACKETS < n) { /* the headers of a packet a few ahead */
            int64_t ahead = off[i + DECODE_PREFETCH_PACKETS];
            if (ahead <= v.limit)
                PREFETCH(v.p + ahead);
            if (ahead + CACHE_LINE <= v.limit)
                PREFETCH(v.p + ahead + CACHE_LINE);
        }
        int64_t cur_off = off[i], cur_link = link[i], end = off[i] + caplen[i];
        int64_t kind = 0;
        uint64_t outer[4] = {0, 0, 0, 0};
        for (int depth = 0;; depth++) {
            decode_layer(&v, cur_off, end, cur_link, &L);
            if (L.tunnel == 0)
                break;
            if (depth == 0) { /* the outermost encapsulation and its addresses */
                kind = L.tunnel;
                outer[0] = L.src_hi;
                outer[1] = L.src_lo;
                outer[2] = L.dst_hi;
                outer[3] = L.dst_lo;
            }
            if (depth == MAX_TUNNEL_DEPTH) {
                L.status = TUNNEL_TOO_DEEP;
                break;
            }
            cur_off = L.inner_off; /* decode again from the inner header; the packet end stays */
            cur_link = L.inner_link;
        }
        status[i] = (int8_t)L.status;
        src_hi[i] = L.src_hi;
        src_lo[i] = L.src_lo;
        dst_hi[i] = L.dst_hi;
        dst_lo[i] = L.dst_lo;
        proto[i] = L.proto;
        sport[i] = L.sport;
        dport[i] = L.dport;
        iplen[i] = L.iplen;
        ipid[i] = L.ipid;
        frag[i] = L.frag;
        ev_src[i] = L.ev_src;
        ev_dst[i] = L.ev_dst;
        fingerprint[i] = L.fingerprint;
        tcp_seq[i] = L.tcp_seq;
        tcp_ack[i] = L.tcp_ack;
        tcp_next[i] = L.tcp_next;
        tcp_flags[i] = L.tcp_flags;
        dns_at[i] = L.dns_at;
        dns_end[i] = L.dns_end;
        tunnel[i] = (int8_t)kind;
        osh[i] = outer[0];
        osl[i] = outer[1];
        odh[i] = outer[2];
        odl[i] = outer[3];
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);

done:
    Py_XDECREF(seq);
    while (have_out > 0)
        PyBuffer_Release(&out[--have_out]);
    while (have_in > 0)
        PyBuffer_Release(&in[--have_in]);
    PyBuffer_Release(&buf);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_dns: _dns.parse and _dns.parse_tcp_segment                                          */

/* The DNS messages of a capture are parsed once per distinct message (a busy capture has
 * hundreds of thousands), and the Python parser's byte-at-a-time name loop was half of
 * `netpol-learn capture` on such captures. The rules here are exactly those of _dns.py, which
 * is the reference: every length is checked against the end of the message, compression
 * pointers must point backwards (so no loops), a name is at most 255 bytes of labels (each
 * label counted with its length byte), label types 0x40 and 0x80 are errors. Any error makes
 * the whole result (): what _dnscount._parse_message returns when the Python code raises
 * DnsError. */

#define DNS_MAX_NAME 255
/* A name's text: its labels' bytes (at most 4 characters each, "\xNN") and the dots between
 * them; with at most 255 bytes of labels and length bytes that is under 4 * 255. */
#define DNS_NAME_TEXT (4 * DNS_MAX_NAME)

enum { DNS_OK = 0, DNS_MALFORMED = 1, DNS_PYERROR = -1 };

/* The text of the answer types, made once in exec_module. */
static PyObject *dns_type_a, *dns_type_aaaa, *dns_type_cname;

/* An ASCII str of n characters. */
static PyObject *ascii_str(const char *text, Py_ssize_t n)
{
    PyObject *s = PyUnicode_New(n, 127);
    if (s)
        memcpy(PyUnicode_1BYTE_DATA(s), text, (size_t)n);
    return s;
}

/* _dns._name: the name at `at` of the message msg[0:n] as text in `out` (DNS_NAME_TEXT bytes),
 * its length in *text_len and the offset just past it in the record (after the first pointer,
 * if any) in *next. The text is what Python's label.decode("ascii", "backslashreplace").lower()
 * gives, labels joined with dots. Returns 0, or -1 when the name is malformed. */
static int dns_name(const uint8_t *msg, Py_ssize_t n, Py_ssize_t at, char *out, Py_ssize_t *text_len,
                    Py_ssize_t *next)
{
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t pos = at, end_of_record = -1, length = 0, w = 0;
    for (;;) {
        if (pos >= n)
            return -1; /* runs past the end of the message */
        unsigned size = msg[pos];
        if (size == 0) {
            pos++;
            break;
        }
        unsigned kind = size & 0xC0;
        if (kind == 0xC0) { /* compression pointer */
            if (pos + 2 > n)
                return -1;
            Py_ssize_t target = ((Py_ssize_t)(size & 0x3F) << 8) | msg[pos + 1];
            if (target >= pos)
                return -1; /* not backwards */
            if (end_of_record < 0)
                end_of_record = pos + 2;
            pos = target;
            continue;
        }
        if (kind)
            return -1; /* label types 0x40, 0x80 */
        if (pos + 1 + (Py_ssize_t)size > n)
            return -1;
        length += size + 1;
        if (length > DNS_MAX_NAME)
            return -1;
        if (w)
            out[w++] = '.';
        for (const uint8_t *c = msg + pos + 1, *stop = c + size; c < stop; c++) {
            if (*c >= 0x80) { /* backslashreplace */
                out[w++] = '\\';
                out[w++] = 'x';
                out[w++] = hex[*c >> 4];
                out[w++] = hex[*c & 15];
            } else {
                out[w++] = (char)(*c >= 'A' && *c <= 'Z' ? *c + ('a' - 'A') : *c);
            }
        }
        pos += 1 + size;
    }
    *text_len = w;
    *next = end_of_record >= 0 ? end_of_record : pos;
    return 0;
}

/* The decimal digits of v (0..255) at out; returns how many. */
static int decimal_u8(unsigned v, char *out)
{
    int w = 0;
    if (v >= 100)
        out[w++] = (char)('0' + v / 100);
    if (v >= 10)
        out[w++] = (char)('0' + v / 10 % 10);
    out[w++] = (char)('0' + v % 10);
    return w;
}

/* str(ipaddress.IPv4Address(a)) for the 4 bytes at a, into out (at least 15 bytes); returns the
 * length. */
static int ipv4_text(const uint8_t *a, char *out)
{
    int w = 0;
    for (int i = 0; i < 4; i++) {
        if (i)
            out[w++] = '.';
        w += decimal_u8(a[i], out + w);
    }
    return w;
}

/* str(ipaddress.IPv6Address(a)) for the 16 bytes at a, into out (at least 40 bytes): hextets in
 * lowercase hex without leading zeros, the longest run of two or more zero hextets (the first of
 * equally long ones) as "::". With mapped_dotted (Python 3.13 and later), an IPv4-mapped address
 * is "::ffff:" and the dotted IPv4 address. Returns the length. */
static int ipv6_text(const uint8_t *a, int mapped_dotted, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned h[8];
    for (int i = 0; i < 8; i++)
        h[i] = ((unsigned)a[2 * i] << 8) | a[2 * i + 1];
    if (mapped_dotted && !(h[0] | h[1] | h[2] | h[3] | h[4]) && h[5] == 0xFFFF) {
        memcpy(out, "::ffff:", 7);
        return 7 + ipv4_text(a + 12, out + 7);
    }
    int best = -1, best_len = 0, run = 0;
    for (int i = 0; i < 8; i++) {
        run = h[i] == 0 ? run + 1 : 0;
        if (run > best_len) {
            best_len = run;
            best = i - run + 1;
        }
    }
    if (best_len < 2)
        best = -1;
    int w = 0;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            out[w++] = ':';
            out[w++] = ':';
            i += best_len - 1;
            continue;
        }
        if (w > 0 && out[w - 1] != ':')
            out[w++] = ':';
        for (int shift = 12; shift >= 0; shift -= 4) /* "%x": no leading zeros */
            if ((h[i] >> shift) || shift == 0)
                out[w++] = hex[(h[i] >> shift) & 15];
    }
    return w;
}

/* tables.get(key) as a new reference, or the text made by `fmt` with key when it is not there. */
static PyObject *table_text(PyObject *tables, unsigned key, const char *fmt)
{
    PyObject *k = PyLong_FromUnsignedLong(key);
    if (!k)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(tables, k);
    Py_DECREF(k);
    if (v)
        return Py_NewRef(v);
    return PyErr_Occurred() ? NULL : PyUnicode_FromFormat(fmt, key);
}

/* A tuple of the n new references in items, which it takes (also when some are NULL, from a
 * failed call: then they are all released and NULL is returned). */
static PyObject *tuple_taking(Py_ssize_t n, PyObject **items)
{
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!items[i])
            goto fail;
    if (!(t = PyTuple_New(n)))
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* _dns.parse of msg[0:n]: *out is set to the tuple (response, rcode, qname, qtype, answers),
 * answers a tuple of (name, type, data, ttl). Returns DNS_OK, DNS_MALFORMED (nothing made) or
 * DNS_PYERROR (an exception is set). */
static int dns_message(const uint8_t *msg, Py_ssize_t n, PyObject *qtypes, PyObject *rcodes, int mapped_dotted,
                       PyObject **out)
{
    char name[DNS_NAME_TEXT], data[DNS_NAME_TEXT];
    Py_ssize_t name_len, data_len, pos;
    if (n < 12)
        return DNS_MALFORMED;
    unsigned flags = ((unsigned)msg[2] << 8) | msg[3];
    unsigned qdcount = ((unsigned)msg[4] << 8) | msg[5], ancount = ((unsigned)msg[6] << 8) | msg[7];
    if (qdcount != 1)
        return DNS_MALFORMED;
    if (dns_name(msg, n, 12, name, &name_len, &pos) < 0 || pos + 4 > n)
        return DNS_MALFORMED;
    unsigned qtype = ((unsigned)msg[pos] << 8) | msg[pos + 1];
    PyObject *qname = ascii_str(name, name_len);
    pos += 4;

    /* The answers: A, AAAA and CNAME records are kept, other records only checked. */
    PyObject *answers = qname ? PyList_New(0) : NULL;
    if (!answers)
        goto error;
    for (unsigned i = 0; i < ancount; i++) {
        if (dns_name(msg, n, pos, name, &name_len, &pos) < 0 || pos + 10 > n)
            goto malformed;
        const uint8_t *r = msg + pos;
        unsigned rtype = ((unsigned)r[0] << 8) | r[1];
        unsigned long ttl = ((unsigned long)r[4] << 24) | ((unsigned long)r[5] << 16) | ((unsigned long)r[6] << 8) | r[7];
        Py_ssize_t rdlen = ((Py_ssize_t)r[8] << 8) | r[9];
        pos += 10;
        if (pos + rdlen > n)
            goto malformed;
        PyObject *type = NULL;
        if (rtype == 1 && rdlen == 4) {
            type = dns_type_a;
            data_len = ipv4_text(msg + pos, data);
        } else if (rtype == 28 && rdlen == 16) {
            type = dns_type_aaaa;
            data_len = ipv6_text(msg + pos, mapped_dotted, data);
        } else if (rtype == 5) { /* the target is read from the record data on, bounded by the message */
            Py_ssize_t ignored;
            if (dns_name(msg, n, pos, data, &data_len, &ignored) < 0)
                goto malformed;
            type = dns_type_cname;
        }
        if (type) {
            PyObject *owner = ascii_str(name, name_len);
            PyObject *text = owner ? ascii_str(data, data_len) : NULL;
            PyObject *ttl_obj = text ? PyLong_FromUnsignedLong(ttl) : NULL;
            PyObject *answer = tuple_taking(4, (PyObject *[]){owner, Py_NewRef(type), text, ttl_obj});
            if (!answer || PyList_Append(answers, answer) < 0) {
                Py_XDECREF(answer);
                goto error;
            }
            Py_DECREF(answer);
        }
        pos += rdlen;
    }

    PyObject *answer_tuple = PyList_AsTuple(answers);
    Py_DECREF(answers);
    PyObject *rcode = answer_tuple ? table_text(rcodes, flags & 0xF, "%u") : NULL;
    PyObject *qtype_text = rcode ? table_text(qtypes, qtype, "TYPE%u") : NULL;
    *out = tuple_taking(5, (PyObject *[]){Py_NewRef((flags & 0x8000) ? Py_True : Py_False), rcode, qname, qtype_text,
                                          answer_tuple});
    return *out ? DNS_OK : DNS_PYERROR;
malformed:
    Py_DECREF(qname);
    Py_DECREF(answers);
    return DNS_MALFORMED;
error:
    Py_XDECREF(qname);
    Py_XDECREF(answers);
    return DNS_PYERROR;
}

PyDoc_STRVAR(parse_dns_doc,
"parse_dns(buffer, start, end, tcp, qtypes, rcodes, mapped_dotted) -> tuple\n\n"
"What _dnscount._parse_message gives for buffer[start:end] (start and end as in a slice), as\n"
"plain tuples: for UDP (tcp false) one message, for TCP the length-prefixed messages of the\n"
"segment (a first message cut off is an error, a later one ends the list), each message a tuple\n"
"in the order of DNS_FIELDS: (response, rcode, qname, qtype, answers), answers a tuple of\n"
"(name, type, data, ttl). () when the reference would raise DnsError. qtypes and rcodes are the\n"
"dicts _dns.QTYPES and _dns.RCODES; mapped_dotted says that ipaddress writes IPv4-mapped IPv6\n"
"addresses as ::ffff:1.2.3.4 (Python 3.13 and later) rather than ::ffff:102:304.");

static PyObject *parse_dns(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7)
        return PyErr_Format(PyExc_TypeError, "parse_dns takes 7 arguments (%zd given)", nargs);
    PyObject *qtypes = args[4], *rcodes = args[5];
    if (!PyDict_Check(qtypes) || !PyDict_Check(rcodes))
        return PyErr_Format(PyExc_TypeError, "parse_dns: qtypes and rcodes must be dicts");
    /* Slice bounds exactly as buffer[start:end] takes integers (clamped, negative from the end). */
    Py_ssize_t start = PyNumber_AsSsize_t(args[1], NULL);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t end = PyNumber_AsSsize_t(args[2], NULL);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    int tcp = PyObject_IsTrue(args[3]);
    int mapped_dotted = tcp < 0 ? -1 : PyObject_IsTrue(args[6]);
    if (mapped_dotted < 0)
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(buf.len, &start, &end, 1);
    const uint8_t *seg = (const uint8_t *)buf.buf + start;
    PyObject *messages = PyList_New(0), *result = NULL, *one;
    if (!messages)
        goto done;
    int status = DNS_OK;
    if (!tcp) {
        status = dns_message(seg, n, qtypes, rcodes, mapped_dotted, &one);
        if (status == DNS_OK) {
            status = PyList_Append(messages, one) < 0 ? DNS_PYERROR : DNS_OK;
            Py_DECREF(one);
        }
    } else {
        /* _dns.parse_tcp_segment: each message behind its 2-byte length. */
        for (Py_ssize_t pos = 0; pos + 2 <= n;) {
            Py_ssize_t size = ((Py_ssize_t)seg[pos] << 8) | seg[pos + 1];
            if (size < 12 || pos + 2 + size > n) {
                if (PyList_GET_SIZE(messages) == 0)
                    status = DNS_MALFORMED;
                break;
            }
            status = dns_message(seg + pos + 2, size, qtypes, rcodes, mapped_dotted, &one);
            if (status != DNS_OK)
                break;
            int appended = PyList_Append(messages, one);
            Py_DECREF(one);
            if (appended < 0) {
                status = DNS_PYERROR;
                break;
            }
            pos += 2 + size;
        }
    }
    if (status == DNS_OK)
        result = PyList_AsTuple(messages);
    else if (status == DNS_MALFORMED)
        result = PyTuple_New(0);
done:
    Py_XDECREF(messages);
    PyBuffer_Release(&buf);
    return result;
}

/* ---------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"walk_pcap", (PyCFunction)(void (*)(void))walk_pcap, METH_VARARGS | METH_KEYWORDS, walk_pcap_doc},
    {"decode", decode, METH_VARARGS, decode_doc},
    {"parse_dns", (PyCFunction)(void (*)(void))parse_dns, METH_FASTCALL, parse_dns_doc},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    if (PyModule_AddIntConstant(m, "WALK_LIMIT", WALK_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "WALK_NEED_DATA", WALK_NEED_DATA) < 0 ||
        PyModule_AddIntConstant(m, "WALK_OVER_SNAPLEN", WALK_OVER_SNAPLEN) < 0)
        return -1;
    PyObject *names = PyTuple_New(N_OUT);
    if (!names)
        return -1;
    for (int i = 0; i < N_OUT; i++) {
        PyObject *s = PyUnicode_FromString(out_names[i]);
        if (!s) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    if (PyModule_AddObject(m, "OUTPUTS", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    /* parse_dns's message tuples, in the order of _dns.DnsMessage's fields. */
    PyObject *fields = Py_BuildValue("(sssss)", "response", "rcode", "qname", "qtype", "answers");
    if (!fields || PyModule_AddObject(m, "DNS_FIELDS", fields) < 0) {
        Py_XDECREF(fields);
        return -1;
    }
    if (!dns_type_a && !(dns_type_a = PyUnicode_InternFromString("A")))
        return -1;
    if (!dns_type_aaaa && !(dns_type_aaaa = PyUnicode_InternFromString("AAAA")))
        return -1;
    if (!dns_type_cname && !(dns_type_cname = PyUnicode_InternFromString("CNAME")))
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "netpol_learn._capture._fastscan",
    .m_doc = "The capture stage's per-packet hot path in C (pcap record walk, header decode, DNS messages); "
             "the Python/numpy code is the reference it must match.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__fastscan(void) { return PyModuleDef_Init(&module); }
