"""The docs check: each backticked name in README.md and docs/*.md against what exists (truth.py).

Which backticked token is which (every rule that applies is checked):

1. `pulumi stack output NAME` anywhere in a token or a shell block: NAME is a stack output.
2. A command line: a part (of `a && b`, `a | b`, `$(a)`) that starts with `dbctl`, `python -m dbctl`,
   `.venv/bin/python -m dbctl` or `./dev`. `./dev`'s own commands are its `case` labels; anything else, and
   `./dev local ...`, goes to dbctl: the subcommand path must exist and every `--flag` must be an option of
   the command it reaches (up to `--`; a command that passes unknown options on, `local psql`, is checked
   up to its name).
3. A script command, `python bench/x.py --flag` or `bench/x.py --flag`: the script has each flag.
4. A dbctl command fragment, a command's name (and subcommands) then `--flags` (`up --no-replica`): some
   command of that name has every flag.
5. A lone flag (`--stack NAME`): an option of some dbctl command or script.
6. A setting: `section.key` for a section of the settings model (`pgbouncer.defaultPoolSize`;
   `alarms.*Percent` must match a key), `aws:region`, or a bare camelCase word (`multiAz`,
   `defaultPoolSize`): a settings key at any level, or a resource input the policy pack reads.
7. A stack output: snake_case whose first and last words are a stack output's first and last words
   (`primary_port`, `rotation_function_arn`); other snake_case (`max_client_conn`) is left alone.
8. A Python name, `dbctl.x.y` (also `components.`, `hosts.`, `lambdas.`, `bench.`, `policy.`): the module
   is a file of the checkout and defines the name.
9. A repository path, a word with a `/` or ending in a file type of this repository (`.py`, `.md`, ...):
   it exists from the repository root (a bare file name: somewhere in the checkout); `{a,b}` is expanded
   and a `*` must match. Skipped on purpose: `<placeholder>`s, absolute paths (the system's, not the
   repository's), URLs, address ranges, npm `@scope/name`s, and what .gitignore ignores (made at run time:
   `.local/`, `.tools/`, `.env`). In a token of several words (another tool's command line) only words under
   a top-level entry of the repository are taken for paths.

Shell blocks (```bash and unlabelled fences) are checked with rules 1-3. Tokens that a rule takes for one of
these kinds but that name something else are in NOT_CHECKED, each with the reason.

Links: each relative link reaches a file of the checkout and, with `#anchor`, a heading of that page.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.unit.docs.truth import CAMEL, ROOT, Truth, is_ignored

NOT_CHECKED: dict[str, str] = {
    # flags of other tools
    "--path": "pulumi config set's flag",
    "--policy-pack-config": "pulumi preview's flag",
    "--create-only": "prisma migrate dev's flag",
    "--max-session-duration": "aws iam's flag",
    "--cli-input-json": "the AWS CLI's flag",
    "--with-systemd": "PgBouncer's ./configure flag",
    "--log": "pgbench's flag",
    # camelCase names of Prisma and node-postgres
    "directUrl": "Prisma's datasource field",
    "shadowDatabaseUrl": "Prisma's datasource field",
    "engineType": "Prisma's generator field",
    "findMany": "a Prisma Client method",
    "createMany": "a Prisma Client method",
    "skipDuplicates": "a Prisma Client option",
    "prismaWrite": "the app's write client, in a code example",
    "prismaRead": "the app's read client, in a code example",
    "rejectUnauthorized": "a node-postgres TLS option",
    # snake_case named like a stack output
    "max_db_connections": "a PgBouncer setting",
    "max_user_connections": "a PgBouncer setting",
    "replica_port": "a key of the local stack's state.json",
    # paths in other projects' trees, and a module named like a file
    "./configure": "PgBouncer's configure script",
    "doc/config.md": "in PgBouncer's source",
    "src/objects.c": "in PgBouncer's source",
    "debian/rules": "in Debian's pgbouncer package",
    "debian/patches/series": "in Debian's pgbouncer package",
    "pulumi/actions": "a GitHub action",
    "../sql/migrations": "relative to prisma/, as prisma/prisma.config.ts writes it",
    "Release-Notes-Amazon-Linux-2023.1.20230809.md": "in amazonlinux/amazon-linux-2023",
    "psycopg.sql": "psycopg's module",
}

DBCTL_ENTRIES = (
    ("dbctl",),
    ("python", "-m", "dbctl"),
    ("python3", "-m", "dbctl"),
    (".venv/bin/python", "-m", "dbctl"),
)
PYTHONS = ("python", "python3", ".venv/bin/python")
# A bare name of one of these types must be some file of the checkout; other bare names (`state.json`,
# `pgbouncer.ini`, `ca.crt`) are files made at run time. Either way `section.<type>` is a file, no setting.
REPO_TYPES = ("py", "md", "yml", "yaml", "toml", "sh", "ts", "mjs", "sql", "sha256", "prisma")
RUNTIME_TYPES = ("json", "ini", "conf", "txt", "crt", "key", "pem", "dump", "log", "gz", "xz", "c", "dsc")
SHELL_FENCES = ("bash", "sh", "")
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")", "$"}

_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_FENCE = re.compile(r"^\s*```\s*(\w*)\s*$")
_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
_PYTHON_NAME = re.compile(r"((?:dbctl|components|hosts|lambdas|bench|policy)(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?")
_PATH_WORD = re.compile(r"[\w.@{},*?+-]+(?:/[\w.@{},*?+-]*)*/?")
_NETWORK = re.compile(r"[0-9a-f.:]+/\d+")  # 0.0.0.0/0, ::/0
_PLACEHOLDER = re.compile(r"<[^>]*>|…|\$")
_STACK_OUTPUT = re.compile(r"pulumi stack output\s+(?:-\S+\s+)*([a-z][a-z0-9_]*)")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Finding:
    doc: str
    line: int
    token: str
    problem: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.token}`: {self.problem}"


@dataclass(frozen=True)
class Snippet:
    line: int
    text: str


@dataclass(frozen=True)
class Page:
    """A page as the check reads it: its prose lines (code blocks blanked), inline code, shell commands."""

    prose: list[str]
    spans: list[Snippet]  # whitespace-normalised: a span may wrap
    shell: list[Snippet]  # a line ending in `\` joined to the next

    @classmethod
    def read(cls, text: str) -> Page:
        prose: list[str] = []
        shell: list[Snippet] = []
        fence: str | None = None
        pending: Snippet | None = None
        for number, line in enumerate(text.splitlines(), 1):
            match = _FENCE.match(line)
            if fence is None:
                fence = match.group(1) if match else None
                prose.append("" if match else line)
                continue
            prose.append("")
            if match and not match.group(1):
                fence = None
            elif fence in SHELL_FENCES:
                start = pending.line if pending else number
                joined = (pending.text + " " if pending else "") + line.strip()
                pending = Snippet(start, joined[:-1]) if joined.endswith("\\") else None
                if pending is None:
                    shell.append(Snippet(start, joined))
        masked = "\n".join(prose)
        spans = [
            Snippet(masked.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split()))
            for m in _SPAN.finditer(masked)
        ]
        return cls(prose, spans, shell)

    def anchors(self) -> set[str]:
        """GitHub's anchors for the headings: the text as rendered, lowercased, punctuation other than `-`
        and `_` dropped, each space a `-`; a repeated one gets `-1`, `-2`..."""
        anchors: set[str] = set()
        for line in self.prose:
            match = _HEADING.match(line)
            if not match:
                continue
            rendered = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
            slug = re.sub(r"[^\w\- ]", "", rendered.lower()).replace(" ", "-")
            candidate, n = slug, 0
            while candidate in anchors:
                n += 1
                candidate = f"{slug}-{n}"
            anchors.add(candidate)
        return anchors


# ------------------------------------------------------------------------------------ commands and flags


def shell_parts(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line (split at `&&`, `|`, `;`, `$(`...), comments and
    `VAR=value` prefixes dropped. Unbalanced quotes (prose in a span): split at whitespace."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        words = text.split()
    parts: list[list[str]] = [[]]
    for word in words:
        if word in SEPARATORS:
            parts.append([])
        elif parts[-1] or not re.match(r"[A-Z_][A-Z0-9_]*=", word):
            parts[-1].append(word)
    return [p for p in parts if p]


def _flag(word: str) -> str | None:
    word = word.strip("[]")
    return word.split("=", 1)[0] if word.startswith("--") and len(word) > 2 else None


def dbctl_problems(args: list[str], t: Truth, path: tuple[str, ...] = ()) -> list[str]:
    """`dbctl <path> <args>`: args may name subcommands further down, then the options."""
    i = 0
    while i < len(args) and (*path, args[i]) in t.commands:
        path, i = (*path, args[i]), i + 1
    command, shown, rest = t.commands[path], " ".join(("dbctl", *path)), args[i:]
    if (
        rest
        and command.subcommands
        and not rest[0].startswith(("-", "["))
        and not _PLACEHOLDER.search(rest[0])
    ):
        return [f"`{shown}` has no command {rest[0]!r} (it has: {', '.join(sorted(command.subcommands))})"]
    if command.passes_unknown_options:
        return []
    problems = []
    for word in rest:
        if word == "--":
            break
        flag = _flag(word)
        if flag and flag not in command.flags:
            problems.append(f"`{shown}` has no option {flag} (it has: {', '.join(sorted(command.flags))})")
    return problems


def command_problems(words: list[str], t: Truth) -> list[str] | None:
    """Rules 2 and 3 for one simple command; None when it is not a dbctl, ./dev or script command."""
    for entry in DBCTL_ENTRIES:
        if tuple(words[: len(entry)]) == entry:
            return dbctl_problems(words[len(entry) :], t)
    if words[0] == "./dev":
        if len(words) == 1 or (words[1] in t.dev_commands and words[1] != "local"):
            return []  # `./dev test`'s arguments are pytest's
        return dbctl_problems(words[1:], t)
    at = 1 if words[0] in PYTHONS and len(words) > 1 else 0
    script = words[at]
    if not (script.startswith(("bench/", "hosts/")) and script.endswith(".py")):
        return None
    if script not in t.scripts:
        return [f"no script {script}"]
    return [
        f"{script} has no option {flag}"
        for word in words[at + 1 :]
        if (flag := _flag(word)) and flag not in t.scripts[script]
    ]


def fragment_problems(words: list[str], t: Truth) -> list[str] | None:
    """Rule 4; None when the words are no such fragment."""
    candidates = []
    for path in t.commands:
        if not path or path[-1] != words[0]:
            continue
        i = 1
        while i < len(words) and (*path, words[i]) in t.commands:
            path, i = (*path, words[i]), i + 1
        if i < len(words) and _flag(words[i]):
            candidates.append(dbctl_problems(words[i:], t, path))
    if not candidates:
        return None
    return [] if any(not found for found in candidates) else candidates[0]


# ------------------------------------------------------------------------ settings, outputs, Python names


def setting_problem(token: str, t: Truth) -> str | None:
    """Rule 6; what follows the key (`: false`, ` = 1`, ` >= 2`) is not part of it."""
    head = re.split(r"\s|:\s|=", token, maxsplit=1)[0]
    if head == "aws:region":
        return None
    if "." in head:
        section, key = head.split(".", 1)
        if section not in t.sections or key.rsplit(".", 1)[-1] in (*REPO_TYPES, *RUNTIME_TYPES):
            return None
        if not re.fullmatch(r"[A-Za-z0-9*…]+", key):
            return None
        if not any(fnmatch.fnmatchcase(k, head.replace("…", "*")) for k in t.settings):
            return f"no setting {head} (dbctl/stackconfig/settings.py)"
        return None
    known = t.leaf_settings | t.policy_inputs | NOT_CHECKED.keys()
    if CAMEL.fullmatch(head) and head not in known:
        return f"no setting {head} at any level (dbctl/stackconfig/settings.py)"
    return None


def output_problem(token: str, t: Truth) -> str | None:
    """Rule 7."""
    if not _SNAKE.fullmatch(token) or token in t.outputs:
        return None
    first, last = t.output_words
    words = token.split("_")
    if words[0] in first and words[-1] in last:
        return f"no stack output {token} (__main__.py's pulumi.export)"
    return None


def python_name_problem(dotted: str) -> str | None:
    """Rule 8: the longest prefix that is a module of the checkout, then the names defined in it."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            break
    else:
        return f"no module {parts[0]}"
    body: list[ast.stmt] = ast.parse(module.read_text(encoding="utf-8")).body
    where = ".".join(parts[:n])
    for name in parts[n:]:
        found = next((node for node in body if name in _defined(node)), None)
        if found is None:
            return f"{where} has no {name} ({module.relative_to(ROOT).as_posix()})"
        body = found.body if isinstance(found, ast.ClassDef) else []
        where += "." + name
    return None


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return set()


# ------------------------------------------------------------------------------------------------ paths


def _expand_braces(word: str) -> list[str]:
    match = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not match:
        return [word]
    head, tail = word[: match.start()], word[match.end() :]
    return [each for alt in match.group(1).split(",") for each in _expand_braces(head + alt + tail)]


def path_problem(word: str, t: Truth, *, whole_token: bool) -> str | None:
    """Rule 9 for one word."""
    if word in NOT_CHECKED or not _PATH_WORD.fullmatch(word) or _NETWORK.fullmatch(word):
        return None
    if _PLACEHOLDER.search(word) or word.startswith(("@", "/", "~", "-")) or is_ignored(word, t.ignored):
        return None
    name = word.rsplit("/", 1)[-1]
    if "/" not in word and not ("." in name and name.rsplit(".", 1)[-1] in REPO_TYPES):
        return None
    top = word.split("/", 1)[0]
    if not whole_token and (top in (".", "..") or not (ROOT / top).exists()):
        return None
    for each in _expand_braces(word):
        if "/" not in each:
            if not any(fnmatch.fnmatchcase(known, each) for known in t.file_names):
                return f"no file named {each} in the repository"
        elif "*" in each or "?" in each:
            if not any(ROOT.glob(each.rstrip("/"))):
                return f"nothing in the repository matches {each}"
        elif not (ROOT / each).exists() or (each.endswith("/") and not (ROOT / each).is_dir()):
            return f"no {each} in the repository (paths are from the repository root)"
    return None


# ------------------------------------------------------------------------------------------ the check


def stack_output_problems(text: str, t: Truth) -> list[str]:
    """Rule 1."""
    return [
        f"no stack output {name} (__main__.py's pulumi.export)"
        for name in _STACK_OUTPUT.findall(text)
        if name not in t.outputs
    ]


def token_problems(token: str, t: Truth) -> list[str]:
    """Every rule that applies to one backticked token."""
    if token in NOT_CHECKED:
        return []
    problems = stack_output_problems(token, t)
    parts = shell_parts(token)
    commands = [found for words in parts if (found := command_problems(words, t)) is not None]
    problems += [p for found in commands for p in found]
    if not commands and parts:
        fragment = fragment_problems(parts[0], t)
        flag = _flag(parts[0][0])
        if fragment is not None:
            problems += fragment
        elif flag and flag not in t.all_flags and flag not in NOT_CHECKED:
            problems.append(f"no dbctl command or script has the option {flag}")
    for problem in (setting_problem(token, t), output_problem(token, t)):
        if problem:
            problems.append(problem)
    if (python := _PYTHON_NAME.fullmatch(token)) and (problem := python_name_problem(python.group(1))):
        problems.append(problem)
    words = token.split()
    problems += [p for w in words if (p := path_problem(w, t, whole_token=len(words) == 1)) is not None]
    return problems


def shell_problems(line: str, t: Truth) -> list[str]:
    """Rules 1-3 for a command line of a shell block."""
    problems = stack_output_problems(line, t)
    for words in shell_parts(line):
        problems += command_problems(words, t) or []
    return problems


def link_problems(target: str, page_dir: Path) -> str | None:
    """A relative link's file must exist, and a `#anchor` must be a heading of the page it leads to."""
    if re.match(r"[a-z]+:", target):
        return None  # https:, mailto:
    file, _, anchor = target.partition("#")
    if not file:
        return None  # this page's own anchors: checked by check() with the page at hand
    dest = (page_dir / file).resolve()
    if not dest.exists():
        return f"no {file} here"
    if anchor and dest.suffix == ".md" and anchor not in Page.read(dest.read_text("utf-8")).anchors():
        return f"no heading #{anchor} in {dest.name}"
    return None


def check(doc: str, text: str, t: Truth, page_dir: Path) -> list[Finding]:
    """Every finding of one page, in line order."""
    page = Page.read(text)
    found = [Finding(doc, s.line, s.text, p) for s in page.spans for p in token_problems(s.text, t)]
    found += [Finding(doc, s.line, s.text, p) for s in page.shell for p in shell_problems(s.text, t)]
    anchors = page.anchors()
    for number, line in enumerate(page.prose, 1):
        for target in _LINK.findall(line):
            if target.startswith("#") and target[1:] not in anchors:
                found.append(Finding(doc, number, target, f"no heading {target} on this page"))
            elif problem := link_problems(target, page_dir):
                found.append(Finding(doc, number, target, problem))
    return sorted(found, key=lambda f: f.line)


def docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
