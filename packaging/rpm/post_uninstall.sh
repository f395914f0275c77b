# State under /var/lib/turnbridge and the spool are never deleted by the package.
systemctl daemon-reload >/dev/null 2>&1 || :
