#!/usr/bin/env bash
# Installs the servers the test suite starts by itself (placeholder: filled in by the PostgreSQL work).
set -euo pipefail
exit 0
