#!/usr/bin/env bash
# The main job of pbxwall, shown in a throwaway network namespace pair; touches nothing on
# the host: two namespaces (pbx, client) joined by a veth pair, documentation addresses only,
# a temp config dir. Everything is removed at exit, even on failure.
set -euo pipefail
BIN=${1:-target/release}
BIN=$(cd "$BIN" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces)"; exit 1; }

PBX=pbxw-demo-pbx-$$
CLI=pbxw-demo-cli-$$
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$PBX" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$PBX"; ip netns add "$CLI"
ip link add dv-pbx-$$ netns "$PBX" type veth peer name dv-cli-$$ netns "$CLI"
ip -n "$PBX" link set lo up; ip -n "$CLI" link set lo up
ip -n "$PBX" addr add 192.0.2.1/24 dev dv-pbx-$$
ip -n "$PBX" addr add 2001:db8::1/64 dev dv-pbx-$$ nodad
ip -n "$PBX" link set dv-pbx-$$ up
ip -n "$PBX" route add 203.0.113.0/24 dev dv-pbx-$$
for a in 192.0.2.10/24 192.0.2.11/24 203.0.113.7/24; do ip -n "$CLI" addr add $a dev dv-cli-$$; done
ip -n "$CLI" addr add 2001:db8::10/64 dev dv-cli-$$ nodad
ip -n "$CLI" link set dv-cli-$$ up

# Listeners in the pbx namespace: TCP 22 (ssh), 80 (web); UDP 5060 (sip), 4569 (iax).
ip netns exec "$PBX" python3 - <<'PY' &
import socket, threading
def tcp(port):
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", port)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"hello\n"); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        d, a = s.recvfrom(2048); s.sendto(d, a)
for p in (22, 80): threading.Thread(target=tcp, args=(p,), daemon=True).start()
for p in (5060, 4569): threading.Thread(target=udp, args=(p,), daemon=True).start()
threading.Event().wait(300)
PY
PIDS+=($!)
sleep 0.5

export PBXWALL_CONFIG_DIR=$TMP/etc PBXWALL_STATE_DIR=$TMP/state
mkdir -p "$PBXWALL_CONFIG_DIR"
echo 'trusted = []' > "$PBXWALL_CONFIG_DIR/pbxwall.toml"
run() { echo; echo "# $*"; ip netns exec "$PBX" "$BIN/$@" || echo "(exit $?)"; }

run add-ip joe-office 192.0.2.10 2001:db8::10 --allow sip-udp,iax --comment "Joe's office" --no-restart
run add-ip admin 203.0.113.7 --allow 8,4 --no-restart
run restart
run status
echo; echo "# nft list table inet pbxwall"
ip netns exec "$PBX" nft list table inet pbxwall

probe() { # probe SRC DST PROTO PORT
  ip netns exec "$CLI" python3 - "$@" <<'PY'
import socket, sys
src, dst, proto, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(0.5); s.bind((src, 0))
try:
    if proto == "tcp":
        s.connect((dst, port)); ok = s.recv(6) == b"hello\n"
    else:
        s.sendto(b"ping", (dst, port)); ok = s.recv(16) == b"ping"
except OSError:
    ok = False
print(f"  {src:>14} -> {dst}:{port}/{proto}: {'allowed' if ok else 'blocked'}")
PY
}
echo; echo "# probes from the client namespace"
probe 192.0.2.10 192.0.2.1 udp 5060
probe 192.0.2.10 192.0.2.1 udp 4569
probe 192.0.2.10 192.0.2.1 tcp 22
probe 2001:db8::10 2001:db8::1 udp 5060
probe 203.0.113.7 192.0.2.1 tcp 22
probe 203.0.113.7 192.0.2.1 tcp 80
probe 203.0.113.7 192.0.2.1 udp 5060
probe 192.0.2.11 192.0.2.1 udp 5060
probe 192.0.2.11 192.0.2.1 tcp 22

run del-acct joe-office
echo; echo "# after del-acct joe-office"
probe 192.0.2.10 192.0.2.1 udp 5060
probe 203.0.113.7 192.0.2.1 tcp 22
echo; echo "demo done; namespaces and files are removed"
