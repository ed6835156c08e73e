"""The option names swanctl.conf accepts, for every strongSwan release extsock knows of.

The one place that knows them. Read from each release's swanctl.opt and the parse rules of
its vici_config.c (5.9.8 up to 6.0.6): an option any of these releases knows is accepted,
whatever charon is in use (swanctl passes it through, and charon says if it is too old);
a name no release knows is an error with a did-you-mean. `INTRODUCED` says from which
release on an option exists, so a message can say so.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


RELEASES = ("5.9.8", "6.0.0", "6.0.1", "6.0.2", "6.0.3", "6.0.4", "6.0.5", "6.0.6")
"""strongSwan releases whose option names are below (oldest first)."""

# (section kind, option) -> first release that knows it; everything else is in 5.9.8.
INTRODUCED: dict[tuple[str, str], str] = {
    ("connection", "ocsp"): "6.0.0",
    ("child", "per_cpu_sas"): "6.0.2",
    ("child", "icmp"): "6.0.5",
    ("child.mode", "iptfs"): "6.0.2",
}

# connections.<conn>.* (swanctl.opt; identical to the rules of vici_config.c)
CONNECTION_KEYS_598 = _words(
    """
    version local_addrs remote_addrs local_port remote_port proposals vips aggressive pull dscp
    encap mobike dpd_delay dpd_timeout fragmentation childless send_certreq send_cert ppk_id
    ppk_required keyingtries unique reauth_time rekey_time over_time rand_time pools if_id_in
    if_id_out mediation mediated_by mediation_peer
    """
)


def _since(kind: str) -> frozenset[str]:
    return frozenset(key for (k, key) in INTRODUCED if k == kind)


CONNECTION_KEYS = CONNECTION_KEYS_598 | _since("connection")

# connections.<conn>.local<suffix>.* and remote<suffix>.*: charon parses both with the same
# rules, so the union of what swanctl.opt documents for either side is accepted for both.
AUTH_KEYS = _words(
    """
    aaa_id auth ca_id cacerts cert_policy certs eap_id groups id pubkeys revocation round xauth_id
    """
)

# connections.<conn>.local<suffix>.cert<suffix>.* and remote<suffix>.cacert<suffix>.*
TOKEN_CERT_KEYS = frozenset({"file", "handle", "slot", "module"})

# connections.<conn>.children.<child>.*
CHILD_KEYS_598 = _words(
    """
    ah_proposals esp_proposals sha256_96 local_ts remote_ts rekey_time life_time rand_time
    rekey_bytes life_bytes rand_bytes rekey_packets life_packets rand_packets updown hostaccess
    mode policies policies_fwd_out dpd_action ipcomp inactivity reqid priority interface mark_in
    mark_in_sa mark_out set_mark_in set_mark_out if_id_in if_id_out label label_mode tfc_padding
    replay_window hw_offload copy_df copy_ecn copy_dscp start_action close_action
    """
)
CHILD_KEYS = CHILD_KEYS_598 | _since("child")
MODES = ("tunnel", "transport", "transport_proxy", "beet", "drop", "pass", *_since("child.mode"))

# authorities.<name>.* (load_authorities.c: cacert a file in x509ca/, *_uris lists)
AUTHORITY_KEYS = _words("cacert file handle slot module crl_uris ocsp_uris cert_uri_base")
AUTHORITY_LIST_KEYS = frozenset({"crl_uris", "ocsp_uris"})
# pools.<name>.*: addrs, and any attribute (charon judges the names); all but addrs are lists.

# load_conns.c is_list_key(): values split on ',' (trimming ' ') into a VICI list, at any depth.
LIST_KEYS = _words(
    """
    local_addrs remote_addrs proposals esp_proposals ah_proposals local_ts remote_ts vips pools
    groups cert_policy
    """
)

# load_conns.c is_file_list_key(): a list of files (or 0x/0s blobs) sent as their contents,
# relative names looked up in these directories beside swanctl.conf.
FILE_LIST_DIRS = {"certs": "x509", "cacerts": "x509ca", "pubkeys": "pubkey"}

# load_creds.c load_secret(): section name prefixes, matched in this order (strpfx).
SECRET_TYPES = (
    "eap",
    "xauth",
    "ntlm",
    "ike",
    "ppk",
    "private",
    "rsa",
    "ecdsa",
    "bliss",  # 5.9.8 only
    "pkcs8",
    "pkcs12",
    "token",
)
SHARED_SECRET_TYPES = frozenset({"eap", "xauth", "ntlm", "ike", "ppk"})
KEY_FILE_SECRET_TYPES = frozenset({"private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12"})
TOKEN_KEYS = frozenset({"handle", "slot", "module", "pin"})

# load_creds.c load_keys(): private key directories beside swanctl.conf (in swanctl's order)
# and the VICI key type sent with the file's bytes when swanctl does not decode the key.
KEY_DIRS = {"private": "any", "rsa": "rsa", "ecdsa": "ecdsa", "bliss": "bliss", "pkcs8": "any"}

# load_creds.c load_certs() / vici_cert_info.c: folder -> (type, flag), in swanctl's order.
CERT_DIRS: dict[str, tuple[str, str | None]] = {
    "x509": ("X509", "NONE"),
    "x509ca": ("X509", "CA"),
    "x509ocsp": ("X509", "OCSP"),
    "x509aa": ("X509", "AA"),
    "x509ac": ("X509_AC", None),
    "x509crl": ("X509_CRL", None),
    "pubkey": ("PUBKEY", None),
}
PKCS12_DIR = "pkcs12"
