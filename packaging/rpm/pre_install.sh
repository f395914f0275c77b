# Create the service user before the files that belong to it.
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u turnbridge - "turnbridge e-invoice daemon" /var/lib/turnbridge' | systemd-sysusers - || :
else
    getent group turnbridge >/dev/null || groupadd -r turnbridge
    getent passwd turnbridge >/dev/null || useradd -r -g turnbridge -d /var/lib/turnbridge -s /sbin/nologin turnbridge
fi
