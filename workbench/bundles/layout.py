"""What a bundle holds, by name, and the limits a bundle from someone else must stay within.

    README.txt            what this is, and the commands that reproduce it (shell-quoted)
    recipe.yaml           the recipe file's text, exactly as written
    recipe.as_run.yaml    the recipe with the run's --set overrides applied: what ran
    results.json          every metric, head score and layer score, the environment, step keys
    provenance.json       model and data hashes, packages, seed, device, world size
    entries/<key>/...     (--with-artifacts) the run's cache entries: manifest.json, result.json,
                          tensors.safetensors, files/**.safetensors|.json (models, masks, features)
    manifest.json         {"format", "version", "members": [{path, bytes, sha256}]}: every other member

Only JSON, safetensors and the three text files exist in a bundle; anything else is refused, so
nothing in a bundle is ever executed or unpickled.
"""

from __future__ import annotations

import re

from workbench.errors import WorkbenchError

FORMAT = "workbench-bundle"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
README = "README.txt"
RECIPE = "recipe.yaml"
RECIPE_AS_RUN = "recipe.as_run.yaml"
RESULTS = "results.json"
PROVENANCE = "provenance.json"
REQUIRED = (README, RECIPE, RECIPE_AS_RUN, RESULTS, PROVENANCE)
ENTRIES = "entries"

# Limits on untrusted bundles. Module attributes, read at call time, so that a test (or a team with
# bigger models) can change them.
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 32 * 1024**3  # one file: a 7B model in float32 is 28 GiB
MAX_TOTAL_BYTES = 128 * 1024**3
MAX_TEXT_BYTES = 64 * 1024**2  # a JSON, YAML or text member that is read into memory
MAX_NAME_LENGTH = 300
MAX_DEPTH = 10

# A path component: letters, digits, '_', '-', '.', never starting with '.' (so no '..', no hidden files).
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
MEMBER_NAME = re.compile(rf"^{_PART}(/{_PART})*$")
ENTRY_FILE = re.compile(
    r"^entries/(?P<key>[0-9a-f]{64})/(?P<path>manifest\.json|result\.json|tensors\.safetensors|files/.+\.(json|safetensors))$"
)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".npy", ".npz", ".joblib")


class BundleError(WorkbenchError):
    """A bundle that cannot be written, read or trusted (exit 2); nothing was written when it is raised."""


def entry_member(key: str, path: str) -> str:
    return f"{ENTRIES}/{key}/{path}"
