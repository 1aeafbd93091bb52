# pg_dump in custom format to BACKUP_DIR, then keep the newest BACKUP_KEEP dumps.
# Reads the standard libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE), and the password from
# the file PGPASSWORD_FILE (a mounted Secret key), handed to libpq as a private passfile so it is
# in no process environment.
# docs/operations.md ("Back up and restore PostgreSQL") restores what this writes.
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  [ -r "$PGPASSWORD_FILE" ] || { echo "backup: cannot read PGPASSWORD_FILE $PGPASSWORD_FILE" >&2; exit 1; }
  PGPASSFILE="$(umask 077 && mktemp)"
  trap 'rm -f "$PGPASSFILE"' EXIT
  # .pgpass escapes : and \ in a password.
  printf '*:*:*:*:%s\n' "$(sed 's/[\\:]/\\&/g' "$PGPASSWORD_FILE")" >"$PGPASSFILE"
  export PGPASSFILE
fi
prefix="$BACKUP_DIR/$PGDATABASE-"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="$prefix$stamp.dump"
# A run killed mid-dump leaves a .partial; it is never mistaken for a backup.
rm -f "$prefix"*.dump.partial
pg_dump --format=custom --file="$target.partial"
# An archive pg_restore cannot list is no backup: fail before it replaces a good one.
pg_restore --list "$target.partial" >/dev/null
mv "$target.partial" "$target"
echo "backup: wrote $target ($(wc -c <"$target") bytes)"
# The UTC stamp sorts by time, so the newest come first in reverse order.
for old in $(ls -1 "$prefix"*.dump | sort -r | tail -n +"$((BACKUP_KEEP + 1))"); do
  rm -f -- "$old"
  echo "backup: removed $old"
done
