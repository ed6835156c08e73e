"""The option names swanctl.conf accepts, from strongSwan 5.9.8's swanctl.opt and load_conns.c."""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# connections.<conn>.* (swanctl.opt; identical to the rules of vici_config.c)
CONNECTION_KEYS = _words(
    """
    version local_addrs remote_addrs local_port remote_port proposals vips aggressive pull dscp
    encap mobike dpd_delay dpd_timeout fragmentation childless send_certreq send_cert ppk_id
    ppk_required keyingtries unique reauth_time rekey_time over_time rand_time pools if_id_in
    if_id_out mediation mediated_by mediation_peer
    """
)

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
CHILD_KEYS = _words(
    """
    ah_proposals esp_proposals sha256_96 local_ts remote_ts rekey_time life_time rand_time
    rekey_bytes life_bytes rand_bytes rekey_packets life_packets rand_packets updown hostaccess
    mode policies policies_fwd_out dpd_action ipcomp inactivity reqid priority interface mark_in
    mark_in_sa mark_out set_mark_in set_mark_out if_id_in if_id_out label label_mode tfc_padding
    replay_window hw_offload copy_df copy_ecn copy_dscp start_action close_action
    """
)

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
    "bliss",
    "pkcs8",
    "pkcs12",
    "token",
)
SHARED_SECRET_TYPES = frozenset({"eap", "xauth", "ntlm", "ike", "ppk"})
KEY_FILE_SECRET_TYPES = frozenset({"private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12"})
TOKEN_KEYS = frozenset({"handle", "slot", "module", "pin"})

# load_creds.c load_keys(): private key directories beside swanctl.conf and the VICI key type
# swanctl sends with the file's bytes when it does not decode the key itself (--noprompt).
KEY_DIRS = {"private": "any", "rsa": "rsa", "ecdsa": "ecdsa", "pkcs8": "any"}
