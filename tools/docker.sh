#!/usr/bin/env bash
# Build or push the edge-inference images with docker buildx, one per platform in module.json.
#
#   tools/docker.sh build [PLATFORM ...]   build images (default: every platform in module.json), load locally
#   tools/docker.sh push  [PLATFORM ...]   build and push them to the registry (run `docker login` first)
#
# Image names: <CONTAINER_REGISTRY_SERVER>/edge-inference:<version>-<platform> (module.json; the server and
# an optional IMAGE_VERSION come from .env, else .env.example). module.json platform -> buildx --platform:
# amd64, amd64.gpu, amd64.debug -> linux/amd64; arm64v8 -> linux/arm64 (needs QEMU/binfmt on an x86 builder).
# TENSORRT=true adds the TensorRT 10 layer to amd64.gpu (requirements-trt.txt; give it its own IMAGE_VERSION,
# e.g. 0.1.0-trt, and deploy it with TENSORRT_ENABLED=true).
# Build context: modules/edge-inference (the package, models/ and the requirements files).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE_DIR="$ROOT/modules/edge-inference"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

action="${1:-}"
case "$action" in
  build|push) shift ;;
  -h|--help|help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

if ! command -v docker >/dev/null 2>&1; then
  echo "docker.sh: the docker CLI is not installed; install Docker (with buildx) to $action images" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker.sh: no Docker engine answers (is the daemon running, and may this user reach it?); cannot $action images" >&2
  exit 1
fi
if ! docker buildx version >/dev/null 2>&1; then
  echo "docker.sh: docker buildx is missing; install the buildx plugin" >&2
  exit 1
fi

# "<platform> <dockerfile> <image>" lines, from module.json and .env (values never printed but the image names).
mapfile -t specs < <(cd "$ROOT" && "$PY" - "$@" <<'PYEOF'
import json, sys
sys.path.insert(0, "tools")
from manifest import MODULE_DIR, load_values, module_image
spec = json.loads((MODULE_DIR / "module.json").read_text())["image"]["tag"]["platforms"]
values, _ = load_values()
wanted = sys.argv[1:] or list(spec)
for platform in wanted:
    if platform not in spec:
        sys.exit(f"docker.sh: no platform {platform!r} in module.json (have {', '.join(spec)})")
    print(platform, spec[platform], module_image(values, platform))
PYEOF
)

for line in "${specs[@]}"; do
  read -r platform dockerfile image <<<"$line"
  case "$platform" in
    arm64v8) docker_platform=linux/arm64 ;;
    *) docker_platform=linux/amd64 ;;
  esac
  if [ "$action" = push ]; then output=--push; else output=--load; fi
  echo "docker.sh: $action $image ($docker_platform, $dockerfile)"
  build_args=()
  if [ "$platform" = amd64.gpu ]; then build_args=(--build-arg "TENSORRT=${TENSORRT:-false}"); fi
  docker buildx build "${build_args[@]}" --platform "$docker_platform" --file "$MODULE_DIR/${dockerfile#./}" --tag "$image" "$output" "$MODULE_DIR"
done
