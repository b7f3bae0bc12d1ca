"""A refit folder in the app (`se-viz refit` output): the sidebar's chooser (a folder path,
or an upload of refit.json and the se_r*.safetensors files) and the networks at each
refit r, built once per process from the sidebar's model and an SE-only file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from ..errors import DatasetError, SEVizError
from ..refit import REFIT_FORMAT


@dataclass(frozen=True)
class RefitFolder:
    """refit.json (``doc``) and, per r (its key in doc["fits"]), the SE file's name,
    sha256 and bytes; ``problems``: why a listed r cannot be shown."""

    doc: dict
    source: str
    files: dict[str, tuple[str, str]]
    data: dict[str, bytes] = field(repr=False)
    problems: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """Identifies the folder's contents (figures are cached under it)."""
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()


def parse_doc(data: bytes, name: str) -> dict:
    """refit.json's contents; DatasetError unless `se-viz refit` wrote it."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise DatasetError(f"{name} is not readable JSON ({exc}); give the refit.json that "
                           "'se-viz refit DIR --reduction R --out OUT' wrote.") from None
    if not isinstance(doc, dict) or doc.get("format") != REFIT_FORMAT or "fits" not in doc:
        raise DatasetError(f"{name} was not written by 'se-viz refit' (no '{REFIT_FORMAT}' "
                           "format); give OUT/refit.json of a refit run.")
    return doc


def assemble(doc: dict, source: str, found: dict[str, bytes]) -> RefitFolder:
    """Match refit.json's r to the SE files ``found`` (name -> bytes) by name and sha256."""
    files, data, problems = {}, {}, []
    for key, fit in doc["fits"].items():
        name, want = fit.get("file", ""), fit.get("sha256", "")
        if name not in found:
            problems.append(f"r = {key}: {name} is missing; add it (it lies next to "
                            "refit.json).")
            continue
        digest = hashlib.sha256(found[name]).hexdigest()
        if digest != want:
            problems.append(f"r = {key}: {name} is not the file refit.json describes (sha256 "
                            f"{digest[:12]}, expected {want[:12]}); run 'se-viz refit' again.")
            continue
        files[key], data[key] = (name, digest), found[name]
    return RefitFolder(doc, source, files, data, tuple(problems))


@st.cache_resource(max_entries=4, show_spinner="Reading the refit folder ...")
def load_refit_path(folder: str, fingerprint: tuple) -> RefitFolder:
    """A refit folder on disk; ``fingerprint`` (sizes and mtimes) in the key: a rewrite
    reloads."""
    root = Path(folder).expanduser()
    target = root / "refit.json" if root.is_dir() else root
    try:
        doc = parse_doc(target.read_bytes(), target.name)
    except OSError as exc:
        raise DatasetError(f"cannot read {target} ({exc.strerror or exc}); give the folder "
                           "that 'se-viz refit --out OUT' wrote.") from None
    found = {}
    for fit in doc["fits"].values():
        path = target.parent / str(fit.get("file", ""))
        if path.is_file() and path.parent == target.parent:
            found[path.name] = path.read_bytes()
    return assemble(doc, str(target.parent), found)


@st.cache_resource(max_entries=4, show_spinner="Reading the refit files ...")
def load_refit_upload(names: tuple, _files: dict[str, bytes]) -> RefitFolder:
    """Uploaded refit.json + se_r*.safetensors; ``names``: (name, sha256) of each upload."""
    docs = [n for n, _ in names if n.endswith(".json")]
    if len(docs) != 1:
        raise DatasetError(f"upload exactly one refit.json with the se_r*.safetensors files "
                           f"(got {len(docs)} .json files).")
    doc = parse_doc(_files[docs[0]], docs[0])
    return assemble(doc, "upload", {n: d for n, d in _files.items() if n != docs[0]})


def _fingerprint(folder: Path) -> tuple:
    from ..engine.build import file_fingerprint

    root = folder if folder.is_dir() else folder.parent
    return tuple((p.name, file_fingerprint(p)) for p in sorted(root.glob("*"))
                 if p.name == "refit.json" or p.suffix == ".safetensors")


def refit_ui() -> RefitFolder | None:
    """The sidebar's chooser of a refit folder (upload or path); None when none is open."""
    from .common import digest_of

    with st.expander("Refit folder (se-viz refit)"):
        st.caption("Made by `se-viz refit DIR --reduction 8 32 --out OUT`. The Reduction "
                   "ratio view then shows your images' gates at each refit r.")
        ups = st.file_uploader("refit.json and se_r*.safetensors", type=["json", "safetensors"],
                               accept_multiple_files=True, key="refit_upload",
                               help="Read as JSON and safetensors only; never unpickled.") or []
        path = st.text_input("or a local path to the refit folder (OUT)",
                             key="refit_path").strip()
    try:
        if ups:
            names = tuple((u.name, digest_of(u)) for u in ups)
            return load_refit_upload(names, {u.name: u.getvalue() for u in ups})
        if path:
            where = Path(path).expanduser()
            if not where.exists():
                raise DatasetError(f"{where} does not exist; give the folder that 'se-viz refit "
                                   "--out OUT' wrote.")
            return load_refit_path(str(where), _fingerprint(where))
    except SEVizError as exc:
        st.error(str(exc))
    return None


@st.cache_resource(max_entries=8, show_spinner="Building the network at the refit r ...")
def refit_network(base_key: str, se_sha256: str, _base: Any, _data: bytes, _name: str) -> Any:
    """The sidebar's network (``base_key`` = its net key) with the SE blocks of one SE-only
    file (``se_sha256``); shared read-only by every session, run under its lock."""
    from ..engine.se_weights import refit_model

    return refit_model(_base, _data, _name)
