# $1 is 0 on a real removal (not an upgrade): stop and disable the service.
if [ "$1" -eq 0 ] 2>/dev/null; then
    systemctl --no-reload disable --now turnbridge.service >/dev/null 2>&1 || :
fi
