#!/usr/bin/env python3
"""Checks the Dockerfile without a Docker daemon (CI has none): it parses with Docker's own
parser (the `dockerfile` package wraps buildkit's), is multi-stage, builds the binary the way
CI does, runs as a non-root user, and its runtime stage installs every Debian package whose
shared libraries the built binary links (found with ldd and dpkg on this Debian machine).

usage: check-dockerfile.py DOCKERFILE GOVEX_BINARY
"""
import re
import subprocess
import sys

import dockerfile

# In every Debian base image already.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libzstd1", "libstdc++6"}


def fail(message):
    print(f"FAIL: Dockerfile: {message}", file=sys.stderr)
    sys.exit(1)


def main(path, binary):
    commands = dockerfile.parse_file(path)
    stages = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append(command)
    if len(stages) < 2:
        fail("expected a multi-stage build (build stage, runtime stage)")
    build, runtime = stages[0], stages[-1]
    if not any(c.cmd == "RUN" and "cargo build --release --locked --bin govex" in c.original for c in build):
        fail("the build stage does not run `cargo build --release --locked --bin govex`")
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("the runtime stage does not switch to a non-root user")
    if not any(c.cmd == "COPY" and "--from=build" in " ".join(c.flags) for c in runtime):
        fail("the runtime stage does not copy the binary from the build stage")
    installed = set()
    for c in runtime:
        if c.cmd == "RUN":
            for match in re.finditer(r"apt-get install ([^&]*)", c.original):
                installed.update(w for w in match.group(1).split() if not w.startswith("-"))

    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    needed = set()
    for line in ldd.splitlines():
        parts = line.split("=>")
        if len(parts) != 2 or not parts[1].strip().startswith("/"):
            continue
        library = parts[1].split()[0]
        resolved = subprocess.run(["readlink", "-f", library], capture_output=True, text=True).stdout.strip()
        # With merged /usr, dpkg knows a library by one of its paths only: ask for each.
        for candidate in (library, resolved, resolved.replace("/usr/lib/", "/lib/", 1)):
            owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if owner.returncode == 0:
                needed.add(owner.stdout.split(":")[0])
                break
        else:
            fail(f"no Debian package owns {library}, which {binary} links")
    # Debian names some library packages with a t64 suffix on newer releases.
    missing = {p for p in needed - BASE_PACKAGES if p not in installed and p.removesuffix("t64") not in installed}
    if missing:
        fail(f"the runtime stage does not install {sorted(missing)}, which {binary} links")
    print(f"Dockerfile: {len(stages)} stages; runtime user {users[-1]}; links {sorted(needed)}; installs {sorted(installed)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
