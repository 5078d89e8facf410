"""``edgefleet cloud``'s settings refused before anything starts, naming the setting."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cloud.node_cli import cloud


def test_ingest_writers_below_one_is_refused_from_the_flag_and_from_the_file(tmp_path: Path) -> None:
    runner = CliRunner()
    flag = runner.invoke(cloud, ["--data-dir", str(tmp_path), "--ingest-writers", "0"])
    assert flag.exit_code == 1 and "ingest_writers must be a whole number of 1 or more, got 0" in flag.output
    config = tmp_path / "cloud.toml"
    config.write_text("ingest_writers = 0\n")
    file = runner.invoke(cloud, ["--config", str(config), "--data-dir", str(tmp_path)])
    assert file.exit_code == 1 and "ingest_writers must be a whole number of 1 or more, got 0" in file.output
    assert not (tmp_path / "cloud.db").exists()  # nothing started
