vcl 4.1;
# precache's backend configuration for Varnish 7.1 (Debian's `varnish` package). See
# docs/backends.md, "Varnish", for the requests it accepts and what they answer.
#
# Placeholders (replace them; precache's tests substitute them and use this file verbatim):
#   {{ORIGIN_HOST}}, {{ORIGIN_PORT}}: the origin every request is sent to.
# Varnish's listen address is not part of the VCL: it is varnishd's `-a` flag.
#
# If you already have a VCL, merge the parts marked "precache:" into it: the ACL, the PURGE and
# BAN branches of vcl_recv, precache_purge and its calls from vcl_hit and vcl_miss, the two
# x-precache-* headers set in vcl_backend_response and removed in vcl_deliver, and vcl_synth.

# std provides tolower() and ban(); purge (shipped with Varnish) provides hard() and soft(),
# which, unlike return (purge), say how many objects they removed.
import std;
import purge;

backend origin {
    .host = "{{ORIGIN_HOST}}";
    .port = "{{ORIGIN_PORT}}";
}

# precache: only these clients may PURGE or BAN; precache sends them from the host it runs on.
# Add the address of every precache API host that is not on this machine.
acl precache_purgers {
    "localhost";
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    # precache: one cache key per domain whatever the case of the Host header, so that a purge
    # finds what a player's request stored.
    if (req.http.host) {
        set req.http.host = std.tolower(req.http.host);
    }

    if (req.method == "PURGE") {
        if (client.ip !~ precache_purgers) {
            return (synth(405, "Not allowed"));
        }
        # Look the object up under the same hash (URL + Host) as a GET; vcl_hit or vcl_miss
        # then removes it with every variant (precache_purge below).
        return (hash);
    }

    if (req.method == "BAN") {
        if (client.ip !~ precache_purgers) {
            return (synth(405, "Not allowed"));
        }
        if (!req.http.host) {
            return (synth(400, "Host required"));
        }
        # Every object of this Host whose URL starts with the request's URL. Ban expressions
        # only compare (==) or match a regular expression (~), so the prefix becomes an
        # anchored regex with every metacharacter escaped here: clients send the plain prefix.
        # The expression tests only obj.* fields (stored by vcl_backend_response), so the ban
        # lurker removes the objects in the background instead of each lookup testing the ban.
        if (std.ban("obj.http.x-precache-host == " + req.http.host +
                " && obj.http.x-precache-url ~ ^" +
                regsuball(req.url, {"([][\\^$.|?*+(){}])"}, {"\\\1"}))) {
            return (synth(200, "Banned"));
        }
        # Whatever std.ban refuses is the client's mistake; the reason is in the status line.
        return (synth(400, std.ban_error()));
    }
}

# precache: removes (or, with X-Precache-Mode: invalidate, marks stale) every variant of the
# object, and answers how many objects that was: 200 when there was at least one, 404 when
# nothing was cached.
sub precache_purge {
    if (req.http.x-precache-mode == "invalidate") {
        # TTL and grace 0: the next request fetches from the origin at once (not in the
        # background) and, since keep is left as it is, revalidates the stale copy with
        # If-None-Match / If-Modified-Since.
        set req.http.x-precache-purged = purge.soft(0s, 0s);
    } else {
        set req.http.x-precache-purged = purge.hard();
    }
    if (req.http.x-precache-purged == "0") {
        return (synth(404, "Not cached"));
    }
    return (synth(200, "Purged"));
}

sub vcl_hit {
    if (req.method == "PURGE") {
        call precache_purge;
    }
}

# A PURGE of an object that is not fresh (or of a URL never fetched) arrives here; expired
# objects kept for revalidation and other variants are still found by purge.hard/soft.
sub vcl_miss {
    if (req.method == "PURGE") {
        call precache_purge;
    }
}

sub vcl_backend_response {
    # precache: the URL and Host on the object itself, for BAN's expressions (see vcl_recv).
    set beresp.http.x-precache-url = bereq.url;
    set beresp.http.x-precache-host = bereq.http.host;
    # Keep expired objects a day longer so that a soft purge (or plain expiry) leads to a
    # conditional request to the origin rather than a full download. Keep never serves a stale
    # object; LRU evicts it first when the storage is full.
    set beresp.keep = 1d;
}

sub vcl_deliver {
    # precache: the BAN bookkeeping headers are not for players.
    unset resp.http.x-precache-url;
    unset resp.http.x-precache-host;
}

sub vcl_synth {
    # precache: how many objects a PURGE removed or invalidated (every Vary variant counts).
    if (req.method == "PURGE" && req.http.x-precache-purged) {
        set resp.http.X-Precache-Purged = req.http.x-precache-purged;
    }
}
