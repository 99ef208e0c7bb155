"""The documentation's examples, executed, and the site built: the docs cannot drift from the code.

Every fenced ``python`` and ``bash`` block of README.md and of every ``docs/**/*.md`` page runs, page by page
(pytest id = the page: ``README.md``, ``how-to/add-backbone``, ...; ``-k how-to/sweep`` runs one page), in page
order, in one scratch workbook made for that page (a temporary folder with a copy of ``notebooks/``, never the
repository's ``runs/`` or ``figures/``), as a user would paste them. What this test changes is visible here:

- ``SUBSTITUTIONS``: tiny sizes for the examples' full sizes (``--epochs 10`` -> ``--epochs 1``, ...);
- ``PLACEHOLDERS``: the files an example takes as given (``scan1.nii.gz``, ``runs/demo/data/manifest.csv``,
  ``lora.yaml``, ...); a page's workbook gets only the ones its blocks name, made when its first block runs;
- ``PRELUDES``: names a Python fragment assumes from the text before it (``model``, ``x``).

A block that cannot run as written says so in an HTML comment on the line(s) just above its fence (invisible
on the built site):

- ``<!-- readme-test: skip — REASON -->``: not run (the reason is required);
- ``<!-- readme-test: expect-fail "MESSAGE" — REASON -->``: runs and must fail with MESSAGE in its output
  (e.g. the missing-weights error of a backbone whose weights cannot be downloaded here);
- ``<!-- readme-test: synopsis -->``: a usage line with ``[--options]``; every ``--flag`` it names must be
  listed by that command's ``--help``;
- ``<!-- readme-test: paste-into PATH, then pytest ARGS -->``: the block is appended to the library file PATH
  (in memory, for a fresh interpreter) and ``pytest ARGS`` runs there.

A new block gets the default: it runs. Blocks of one page share its workbook, so a later block may use what an
earlier one made (``molre evaluate runs/molre`` after ``molre train --run-dir runs/molre``); pages never share
one, so one page's blocks must not need another's. Write an expensive example once, on one page, and link to it.

``test_site_builds_strict`` runs ``mkdocs build --strict``: a broken link or anchor, a page missing from the
navigation or a docstring mkdocstrings cannot read fails the suite. The reference pages for the CLI, the
notebook parameters and the findings are generated at build time (``docs/gen_reference.py``), so they cannot
drift from the parsers, the schemas and ``findings.csv``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent  # the venv's bin/: molre, papermill, torchrun, mkdocs
BLOCK_TIMEOUT_S = 900  # a block of several CPU trainings (DDP included) on a loaded 2-core machine

# Page text -> what runs here (applied to bash and python blocks, in this order).
SUBSTITUTIONS: list[tuple[str, str]] = [
    # training at toy size: random-init reduced phantom_vit (no cached pretraining needed), 1 epoch, tiny volumes
    ("--backbone phantom_vit", "--backbone phantom_vit --no-pretrained --reduced --device cpu --eval-bootstrap 10"),
    ("--volume-shape 24 64 64", "--volume-shape 4 32 32"),
    ("--epochs 10", "--epochs 1"),
    ("--nproc_per_node 4", "--nproc_per_node 1"),  # the launcher path; 2-process DDP equality: tests/engine/test_train.py
    ("--bootstrap 1000", "--bootstrap 20"),
    ("[--pseudonymize --id-map ids.csv]", "--pseudonymize --id-map ids.csv"),  # optional flags: run them too
    # papermill runs of 01_train at toy size
    ("-p BACKBONE phantom_vit", "-p BACKBONE phantom_vit -p PRETRAINED False -p REDUCED True -p EPOCHS 1 "
                                "-p EVAL_BOOTSTRAP 10 -p DEVICE cpu -y 'VOLUME_SHAPE: [4, 32, 32]'"),
    ("-p BOOTSTRAP 1000", "-p BOOTSTRAP 20"),
    ("PhantomConfig(shape=(24, 64, 64))", "PhantomConfig(shape=(8, 32, 32))"),
]

# Files the examples take as given (paths relative to the scratch workbook): what each one is, and how it is made.
TRAIN_YAML = """\
manifest: runs/demo/data/manifest.csv
backbone: phantom_vit
pretrained: false
reduced: true
adapter: {adapter}
rank: 2
n_experts: {experts}
volume_shape: [4, 32, 32]
epochs: 1
batch_size: 8
eval_bootstrap: 10
device: cpu
"""
PLACEHOLDERS = {
    "runs/demo/data/manifest.csv": "molre synth --out runs/demo/data --n-scans 24 --shape 32,32,12 --workers 1",
    "scan1.nii.gz": "first NIfTI scan of runs/demo/data",
    "dicom_series_dir/": "molre synth --format dicom --n-scans 1 (its one series folder)",
    "lora.yaml": TRAIN_YAML.format(adapter="lora", experts=1),
    "cfg.yaml": TRAIN_YAML.format(adapter="molre", experts=2),
}

# Names a Python block uses from the text before it, keyed by the block's first line.
PRELUDES = {
    "from molre_lib.adapters import MoLREConfig": textwrap.dedent("""\
        import torch
        from molre_lib.backbones import create_model
        model = create_model("phantom_vit")   # a model from "Backbones" (random init: 4 blocks, 64 px slices)
        x = torch.rand(2, 3, 4, 64, 64)       # (B, C, D, H, W)
        """),
}

DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(?P<body>.*?)\s*-->", re.S)
KINDS = ("skip", "expect-fail", "synopsis", "paste-into")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    section: str
    kind: str = "run"
    argument: str = ""
    reason: str = ""
    page: str = "README.md"

    @property
    def id(self) -> str:
        return f"{self.page}:L{self.line}-{self.lang}"


def _directive(body: str, line: int, source: str) -> tuple[str, str, str]:
    """(kind, argument, reason) of a ``readme-test:`` comment; an unknown kind is an error in the page."""
    kind, _, rest = body.strip().partition(" ")
    if kind not in KINDS:
        raise ValueError(f"{source} line {line}: unknown readme-test directive {kind!r}; use one of {KINDS}")
    if kind == "expect-fail":
        m = re.fullmatch(r'"(?P<arg>[^"]+)"\s*(?:(?:—|--|-)\s*(?P<reason>.*))?', rest.strip(), re.S)
        if not m:
            raise ValueError(f'{source} line {line}: write expect-fail "MESSAGE" — REASON')
        return kind, m.group("arg"), (m.group("reason") or "").strip()
    parts = re.split(r"(?:^|\s+)(?:—|--|-)\s+", rest.strip(), maxsplit=1)
    argument, reason = parts[0], (parts[1] if len(parts) > 1 else "")
    if kind == "skip" and not reason.strip():
        raise ValueError(f"{source} line {line}: 'readme-test: skip' needs a reason after a dash")
    return kind, argument.strip(), reason.strip()


def page_blocks(text: str, page: str = "README.md") -> list[Block]:
    """Fenced python / bash blocks of one page with the directive written just above each (blank lines may
    separate them). Fences may be indented (inside a list item or an admonition)."""
    lines = text.splitlines()
    blocks, section, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        m = re.match(r"^(?P<indent>\s*)```(?P<lang>\w+)\s*$", line)
        if m:
            indent = m.group("indent")
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
            if end is None:
                raise ValueError(f"{page} line {i + 1}: fence never closed")
            if m.group("lang") in ("python", "bash"):
                body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:end]]
                block = Block(m.group("lang"), "\n".join(body) + "\n", i + 1, section, page=page)
                j = i - 1
                while j >= 0 and not lines[j].strip():
                    j -= 1
                above = "\n".join(lines[max(0, j - 3):j + 1])
                found = list(DIRECTIVE.finditer(above))
                if j >= 0 and found and lines[j].rstrip().endswith("-->"):
                    block.kind, block.argument, block.reason = _directive(found[-1].group("body"), j + 1, page)
                blocks.append(block)
            i = end
        i += 1
    return blocks


readme_blocks = page_blocks  # the name this harness had when it ran README.md only


def page_name(path: Path) -> str:
    """README.md, or a docs page as its path under docs/ without .md (how-to/add-backbone)."""
    return "README.md" if path == README else path.relative_to(DOCS).with_suffix("").as_posix()


def doc_pages() -> list[Path]:
    return [README] + sorted(DOCS.rglob("*.md"))


BLOCKS = [b for path in doc_pages() for b in page_blocks(path.read_text(encoding="utf-8"), page_name(path))]


# -- the scratch workbooks ---------------------------------------------------------------------------------
def _env(ws: Path) -> dict:
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", MOLRE_ROOT=str(ws), MOLRE_CACHE_DIR=str(ws / "cache"),
               MOLRE_WEIGHTS_DIR=str(ws / "weights"), HF_HUB_CACHE=str(ws / "hf"), HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _sh(cmd: str, ws: Path, timeout: int = BLOCK_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -eo pipefail\n" + cmd], cwd=ws, env=_env(ws), capture_output=True,
                          text=True, timeout=timeout)


def _check(run: subprocess.CompletedProcess, what: str) -> None:
    assert run.returncode == 0, f"{what} failed (exit {run.returncode}):\n{(run.stdout + run.stderr)[-4000:]}"


def _make_manifest(ws: Path) -> None:
    _check(_sh(PLACEHOLDERS["runs/demo/data/manifest.csv"], ws), "making runs/demo/data")


def _make_scan1(ws: Path) -> None:
    nifti = sorted((ws / "runs/demo/data/scans").rglob("*.nii.gz"))
    shutil.copy(nifti[0], ws / "scan1.nii.gz")


def _make_dicom_series(ws: Path) -> None:
    _check(_sh("molre synth --out dicom_set --n-scans 1 --shape 32,32,12 --format dicom --workers 1", ws),
           "making a DICOM series")
    series = sorted(p.parent for p in (ws / "dicom_set" / "scans").rglob("*.dcm"))[0]
    shutil.copytree(series, ws / "dicom_series_dir")


def _writer(name: str) -> Callable[[Path], None]:
    return lambda ws: (ws / name).write_text(PLACEHOLDERS[name])


# How each placeholder is made, and the placeholders it needs first (the YAML files name the manifest).
MAKERS: dict[str, tuple[tuple[str, ...], Callable[[Path], None]]] = {
    "runs/demo/data/manifest.csv": ((), _make_manifest),
    "scan1.nii.gz": (("runs/demo/data/manifest.csv",), _make_scan1),
    "dicom_series_dir/": ((), _make_dicom_series),
    "lora.yaml": (("runs/demo/data/manifest.csv",), _writer("lora.yaml")),
    "cfg.yaml": (("runs/demo/data/manifest.csv",), _writer("cfg.yaml")),
}
assert set(MAKERS) == set(PLACEHOLDERS)


def placeholders_needed(blocks: list[Block]) -> list[str]:
    """The placeholders a page's runnable blocks name, with the ones they need, in the order to make them."""
    code = "\n".join(substitute(b.code) for b in blocks if b.kind in ("run", "expect-fail", "paste-into"))
    wanted, order = {name for name in PLACEHOLDERS if name.rstrip("/") in code}, []

    def visit(name: str) -> None:
        for dep in MAKERS[name][0]:
            visit(dep)
        if name not in order:
            order.append(name)

    for name in sorted(wanted):
        visit(name)
    return order


def new_workbook(ws: Path, blocks: list[Block]) -> Path:
    """A scratch workbook: notebooks/ copied, .venv and data_manifests linked, the page's placeholders made."""
    shutil.copytree(ROOT / "notebooks", ws / "notebooks")
    for name in (".venv", "data_manifests"):
        if (ROOT / name).exists():
            (ws / name).symlink_to(ROOT / name)
    (ws / ".molre-root").write_text("")
    for name in placeholders_needed(blocks):
        MAKERS[name][1](ws)
    return ws


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory) -> Callable[[str], Path]:
    """The scratch workbook of a page, made when the page's first block asks for it."""
    made: dict[str, Path] = {}

    def get(page: str) -> Path:
        if page not in made:
            folder = tmp_path_factory.mktemp(re.sub(r"[^A-Za-z0-9]+", "_", page))
            made[page] = new_workbook(folder, [b for b in BLOCKS if b.page == page])
        return made[page]

    return get


def substitute(code: str) -> str:
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    return code


def run_block(block: Block, ws: Path) -> subprocess.CompletedProcess:
    """Run one block as written (after SUBSTITUTIONS / PRELUDES) in the scratch workbook."""
    code = substitute(block.code)
    if block.lang == "bash":
        return _sh(code, ws)
    prelude = next((p for first, p in PRELUDES.items() if code.lstrip().startswith(first)), "")
    script = ws / f"docs_block_L{block.line}.py"
    script.write_text(prelude + code)
    return subprocess.run([sys.executable, script.name], cwd=ws, env=_env(ws), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def synopsis_problems(block: Block, ws: Path) -> list[str]:
    """Flags a usage line names that its command's --help does not list."""
    problems = []
    for line in re.sub(r"\\\n\s*", " ", block.code).splitlines():
        line = line.split("  #")[0].strip()
        if not line.startswith("molre "):
            continue
        words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
        command = ["molre"] + [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z0-9-]*", w)][:2]
        help_run = _sh(" ".join(command) + " --help", ws, timeout=120)
        if help_run.returncode != 0 and len(command) == 3:  # e.g. `molre synth --out x`: 'x' is no subcommand
            command = command[:2]
            help_run = _sh(" ".join(command) + " --help", ws, timeout=120)
        if help_run.returncode != 0:
            problems.append(f"{' '.join(command)} --help failed: {help_run.stderr[-300:]}")
            continue
        flags = set(re.findall(r"--[a-z][a-z0-9-]*", line))
        missing = sorted(f for f in flags if not re.search(re.escape(f) + r"\b", help_run.stdout))
        problems += [f"{' '.join(command)}: {f} is not an option (see --help)" for f in missing]
    return problems


PASTE = textwrap.dedent("""\
    import importlib.machinery, importlib.util, sys
    from pathlib import Path
    TARGET, FILE, BLOCK = sys.argv[1], sys.argv[2], Path(sys.argv[3]).read_text()

    class Pasted(importlib.machinery.SourceFileLoader):
        def get_code(self, fullname):  # the file as the page says to edit it: the block pasted at its end
            return compile(Path(self.path).read_text() + "\\n\\n" + BLOCK, self.path, "exec")

    class Finder:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == TARGET:
                return importlib.util.spec_from_file_location(fullname, FILE, loader=Pasted(fullname, FILE))

    sys.meta_path.insert(0, Finder())
    import pytest
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=importlib", *sys.argv[4:]]))
    """)


def run_pasted(block: Block, ws: Path) -> subprocess.CompletedProcess:
    """Append the block to the library file it names (for one interpreter) and run the tests it names."""
    m = re.fullmatch(r"(?P<path>[^\s,]+),?\s+then\s+pytest\s+(?P<args>.+)", block.argument)
    assert m, f"{block.page} line {block.line}: write paste-into PATH, then pytest ARGS"
    path = ROOT / m.group("path")
    module = ".".join(Path(m.group("path")).with_suffix("").parts)
    (ws / "pasted_block.py").write_text(block.code)
    (ws / "paste_and_test.py").write_text(PASTE)
    args = [a if a.startswith("-") or not a.startswith("tests/") else str(ROOT / a) for a in shlex.split(m.group("args"))]
    return subprocess.run([sys.executable, "paste_and_test.py", module, str(path), "pasted_block.py", *args], cwd=ws,
                          env=_env(ws), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)


# -- tests ---------------------------------------------------------------------------------------------------
def test_pages_have_examples_and_every_directive_parses():
    assert len(BLOCKS) >= 8
    assert {b.page for b in BLOCKS} - {"README.md"}, "no docs page has an example"
    for block in BLOCKS:
        assert block.kind in ("run", *KINDS)
        if block.kind == "skip":
            assert block.reason


def test_no_example_is_run_twice():
    """The same runnable block on two pages would cost CI twice: write it once and link to it."""
    seen: dict[str, str] = {}
    for block in BLOCKS:
        if block.kind in ("run", "expect-fail", "paste-into"):
            other = seen.setdefault(block.code.strip(), block.id)
            assert other == block.id, f"{block.id} repeats {other}"


def test_directives_are_read_from_the_comment_above_the_fence():
    text = textwrap.dedent("""\
        # A
        <!-- readme-test: expect-fail "MissingWeightsError" — needs weights -->
        ```python
        create_model("rad_dino", pretrained=True)
        ```
        ## B
        <!-- readme-test: skip — runs the demo -->

        ```bash
        make demo
        ```
        ```bash
        molre backbones
        ```
        1. a list item

            ```bash
            molre validate m.csv
            ```
        """)
    a, b, c, d = page_blocks(text, "how-to/x")
    assert (a.kind, a.argument, a.reason, a.section) == ("expect-fail", "MissingWeightsError", "needs weights", "A")
    assert (b.kind, b.reason, b.line) == ("skip", "runs the demo", 9)
    assert c.kind == "run"
    assert (d.code, d.id) == ("molre validate m.csv\n", "how-to/x:L17-bash")
    with pytest.raises(ValueError, match="how-to/x line 1: 'readme-test: skip' needs a reason"):
        page_blocks("<!-- readme-test: skip -->\n```bash\nls\n```\n", "how-to/x")
    with pytest.raises(ValueError, match="unknown readme-test directive 'skp'"):
        page_blocks("<!-- readme-test: skp — x -->\n```bash\nls\n```\n")


def test_a_page_gets_only_the_placeholders_it_names():
    blocks = [Block("bash", "molre predict runs/x scan1.nii.gz\n", 1, "s"),
              Block("bash", "molre train --config cfg.yaml\n", 5, "s", kind="skip", reason="r")]
    assert placeholders_needed(blocks) == ["runs/demo/data/manifest.csv", "scan1.nii.gz"]
    assert placeholders_needed([Block("bash", "molre backbones\n", 1, "s")]) == []


def test_a_broken_example_fails(tmp_path):
    """The harness notices an example that no longer works (a renamed option) and a wrong synopsis."""
    (tmp_path / ".molre-root").write_text("")
    broken = Block("bash", "molre validate --no-such-flag x.csv\n", 1, "t")
    assert run_block(broken, tmp_path).returncode != 0
    assert synopsis_problems(Block("bash", "molre validate M.csv [--root DIR] [--gone]\n", 1, "t", "synopsis"),
                             tmp_path) == ["molre validate: --gone is not an option (see --help)"]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: broken links and anchors, pages left out of the nav, unreadable docstrings."""
    run = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                              "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"})
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{output[-6000:]}"
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, workbooks):
    where = f"{block.page} line {block.line} ({block.section})"
    if block.kind == "skip":
        pytest.skip(f"{where}: {block.reason}")
    ws = workbooks(block.page)
    if block.kind == "synopsis":
        problems = synopsis_problems(block, ws)
        assert not problems, f"{where}:\n" + "\n".join(problems)
        return
    run = run_pasted(block, ws) if block.kind == "paste-into" else run_block(block, ws)
    output = run.stdout + run.stderr
    if block.kind == "expect-fail":
        assert run.returncode != 0, f"{where} was expected to fail with {block.argument!r} but ran:\n{output[-2000:]}"
        assert block.argument in output, f"{where} failed, but without {block.argument!r}:\n{output[-3000:]}"
    else:
        assert run.returncode == 0, f"{where} failed (exit {run.returncode}):\n{output[-4000:]}"
