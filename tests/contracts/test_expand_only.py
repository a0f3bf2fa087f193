"""Rolling upgrades: every migration after the baseline is an expand migration.

A node on the previous release keeps serving while ``keyfob db upgrade`` runs and after
it, so a migration may only add: tables, nullable columns (or ones with a server
default), indexes. Dropping, renaming, narrowing or making a column NOT NULL without a
default would break that node's queries and inserts. A contract migration — allowed only
once no supported release still uses what it removes — declares ``contract = True`` and
raises ``schema_compat.oldest_code`` so older nodes refuse to start instead of failing
later (docs/deploy.md, "Rolling upgrades").

The checker reads the scripts' ``upgrade()`` functions; the second half of the module
shows it catching each kind of bad migration, written to a temporary folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keyfob.store.migrations

VERSIONS = Path(keyfob.store.migrations.__file__).parent / "versions"
# Migrations up to and including this one predate the policy (their downgrades drop
# things, and some upgrades did before several nodes were supported).
BASELINE = "0005s"

_DROPS = {"drop_column", "drop_table", "rename_table", "drop_constraint"}
_SQL_WORDS = ("DROP ", "RENAME ", "ALTER COLUMN", "SET NOT NULL", "TRUNCATE ", "DELETE FROM")


def _assigned(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _column_problem(column: ast.expr) -> str | None:
    """A column added to an existing table must take rows that do not name it."""
    if not isinstance(column, ast.Call):
        return None
    if _keyword(column, "primary_key") is not None:
        return "adds a primary-key column to an existing table"
    if _is_false(_keyword(column, "nullable")) and _keyword(column, "server_default") is None:
        return "adds a NOT NULL column without a server_default (older nodes' inserts fail)"
    return None


def problems(script: Path) -> list[str]:
    """What in the script's ``upgrade()`` would break a node on the previous release."""
    tree = ast.parse(script.read_text())
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    if upgrade is None:
        return []
    found: list[str] = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        op = node.func.attr
        if op in _DROPS:
            found.append(f"{op}()")
        elif op == "alter_column":
            if _is_false(_keyword(node, "nullable")):
                found.append("alter_column(nullable=False)")
            for narrowing in ("new_column_name", "type_"):
                if _keyword(node, narrowing) is not None:
                    found.append(f"alter_column({narrowing}=…)")
        elif op == "add_column" and node.args:
            problem = _column_problem(node.args[-1])
            if problem:
                found.append(f"add_column: {problem}")
        elif op == "execute" and node.args:
            sql = node.args[0]
            text = sql.value if isinstance(sql, ast.Constant) else ast.unparse(sql)
            upper = str(text).upper()
            found.extend(f"execute({word.strip()}…)" for word in _SQL_WORDS if word in upper)
    if found and _assigned(tree, "contract") is True:
        if "schema_compat" in ast.unparse(upgrade):
            return []
        return [*found, "contract = True but upgrade() does not raise schema_compat.oldest_code"]
    return found


def after_baseline(folder: Path) -> list[Path]:
    """The scripts that come after ``BASELINE`` in the chain (by down_revision)."""
    parents: dict[str, str | None] = {}
    paths: dict[str, Path] = {}
    for script in folder.glob("*.py"):
        tree = ast.parse(script.read_text())
        revision = _assigned(tree, "revision")
        if isinstance(revision, str):
            down = _assigned(tree, "down_revision")
            parents[revision] = down if isinstance(down, str) else None
            paths[revision] = script
    later = []
    for revision in paths:
        step: str | None = revision
        while step is not None and step != BASELINE:
            step = parents.get(step)
        if step == BASELINE and revision != BASELINE:
            later.append(paths[revision])
    return sorted(later)


def test_the_baseline_exists_and_later_migrations_are_checked() -> None:
    assert (VERSIONS / f"{BASELINE}_agent_networks.py").exists()
    assert after_baseline(VERSIONS), "no migration after the baseline: the check checks nothing"


@pytest.mark.parametrize("script", after_baseline(VERSIONS), ids=lambda p: p.stem)
def test_every_migration_after_the_baseline_only_adds(script: Path) -> None:
    assert problems(script) == []


# -- the checker catches bad migrations -----------------------------------------------------

_HEAD = """
import sqlalchemy as sa
from alembic import op

revision = "0099x"
down_revision = "0006u"
{extra}

def upgrade() -> None:
{body}


def downgrade() -> None:
    op.drop_table("anything")  # downgrades may drop: they are not part of a rolling upgrade
"""

BAD = {
    "drop_column": 'with op.batch_alter_table("agents") as b:\n        b.drop_column("name")',
    "drop_table": 'op.drop_table("prices")',
    "rename": 'op.rename_table("prices", "price_list")',
    "not_null": 'op.alter_column("agents", "allowed_networks", nullable=False)',
    "retype": 'op.alter_column("agents", "name", type_=sa.String(10))',
    "rename_column": 'op.alter_column("agents", "name", new_column_name="label")',
    "not_null_column": 'op.add_column("agents", sa.Column("tier", sa.Text, nullable=False))',
    "raw_sql": 'op.execute("ALTER TABLE agents DROP COLUMN name")',
}
GOOD = {
    "nullable_column": 'op.add_column("agents", sa.Column("tier", sa.Text, nullable=True))',
    "defaulted_column": (
        'op.add_column("agents", sa.Column("tier", sa.Text, nullable=False, '
        'server_default="basic"))'
    ),
    "new_table": 'op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))',
    "index": 'op.create_index("ix_agents_created", "agents", ["created_at"])',
}


def write(folder: Path, body: str, extra: str = "") -> Path:
    script = folder / "0099x_test.py"
    script.write_text(_HEAD.format(body="    " + body, extra=extra))
    return script


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_checker_refuses_a_migration_that_removes(tmp_path: Path, name: str) -> None:
    script = write(tmp_path, BAD[name])
    (tmp_path / "0006u_base.py").write_text('revision = "0006u"\ndown_revision = "0005s"\n')
    (tmp_path / "0005s_agent_networks.py").write_text('revision = "0005s"\n')
    assert script in after_baseline(tmp_path)
    assert problems(script) != []


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_checker_lets_expand_migrations_through(tmp_path: Path, name: str) -> None:
    assert problems(write(tmp_path, GOOD[name])) == []


def test_a_contract_migration_must_raise_the_floor(tmp_path: Path) -> None:
    bare = write(tmp_path, BAD["drop_table"], extra="contract = True")
    assert any("schema_compat" in p for p in problems(bare))
    raised = write(
        tmp_path,
        BAD["drop_table"] + "\n    op.execute(\"UPDATE schema_compat SET oldest_code = '0099x'\")",
        extra="contract = True",
    )
    assert problems(raised) == []
