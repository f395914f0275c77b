systemd-tmpfiles --create /usr/lib/tmpfiles.d/turnbridge.conf >/dev/null 2>&1 || :
chown root:turnbridge /etc/turnbridge/turnbridge.toml 2>/dev/null || :
systemctl daemon-reload >/dev/null 2>&1 || :
# $1 is 2 or more on an upgrade: restart a running service on the new binary.
if [ "$1" -ge 2 ] 2>/dev/null; then
    systemctl try-restart turnbridge.service >/dev/null 2>&1 || :
fi
