#!/usr/bin/env bash
# `make buf-breaking`: are the protos in the work tree wire- and source-compatible with main's?
#
# Compares against the local `main` branch (`.git#branch=main`), or `origin/main` in a clone that has
# no local main, or, in a checkout with neither (one detached commit), the checked-out commit. On a feature branch that is the branch point's contract; on main itself (CI checks out
# a clean main) it is the committed protos, so the first run compares them with themselves and every
# later run catches an uncommitted breaking edit. BUF_BREAKING_AGAINST overrides the input, e.g.
# `.git#ref=HEAD~1` to check the last commit of main, or a `buf build` image of a released version.
set -euo pipefail

BUF=${BUF:-node_modules/.bin/buf}
against=${BUF_BREAKING_AGAINST:-}
if [ -z "$against" ]; then
  if git rev-parse --verify --quiet refs/heads/main >/dev/null; then
    against='.git#branch=main'
  elif git rev-parse --verify --quiet refs/remotes/origin/main >/dev/null; then
    against='.git#ref=refs/remotes/origin/main'
  elif git rev-parse --verify --quiet HEAD >/dev/null; then
    # A checkout of one commit (detached, no branch refs): that commit is main's as far as we know.
    echo "buf-breaking: no main branch here; comparing with the checked-out commit (HEAD)"
    against='.git#ref=HEAD'
  else
    echo "buf-breaking: no main branch and no commit to compare the protos against; set BUF_BREAKING_AGAINST" >&2
    exit 1
  fi
fi
echo "buf breaking: the work tree's protos against $against (rules: buf.yaml, breaking)"
exec "$BUF" breaking --against "$against"
