# Helpers shared by the scripts in this folder; they source it after
# changing to the repository root. `usage_error` prints the sourcing
# script's own `usage`.

die() {
  echo "error: $*" >&2
  exit 1
}

usage_error() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 2
}

say() { echo "$*" >&2; }
