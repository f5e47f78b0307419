"""The reference pages are generated from the code; the committed copies must be current."""

from __future__ import annotations

import pytest

from keepwarm.cli import docgen


@pytest.mark.parametrize(
    ("page", "render"),
    [("cli.md", docgen.render_cli), ("configuration.md", docgen.render_configuration)],
)
def test_reference_page_matches_the_code(page: str, render: object) -> None:
    assert callable(render)
    committed = (docgen.DOCS / page).read_text(encoding="utf-8")
    assert committed == render(), f"docs/{page} is stale: run .venv/bin/python -m keepwarm.cli.docgen"


def test_every_setting_and_verb_is_documented() -> None:
    configuration = docgen.render_configuration()
    models = (
        docgen.AppSection,
        docgen.ClusterSettings,
        docgen.ServiceHealthSettings,
        docgen.AutoscaleSettings,
    )
    for model in models:
        for key, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{key} has no description"
            if key not in ("service_health", "autoscale"):
                assert f"| `{key}` |" in configuration
    cli = docgen.render_cli()
    for verb in ("submit", "result", "tasks", "cancel", "demo"):
        assert f"## keepwarm {verb}" in cli
