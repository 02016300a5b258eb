"""Machine-readable output: SARIF that GitHub code scanning accepts, and the JSON edits."""

from __future__ import annotations

import json

SOURCE = "import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n\n\nz = (a - a.mean()) / a.std()\n"


def _require(obj: dict, keys, where: str) -> None:
    for key in keys:
        assert key in obj, f"SARIF {where} lacks required `{key}`"


def assert_valid_sarif(log: dict) -> None:
    """The SARIF 2.1.0 schema's required structure, plus what GitHub code scanning needs of an upload."""
    _require(log, ["version", "runs"], "log")
    assert log["version"] == "2.1.0" and log.get("$schema", "").endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and log["runs"]
    for run in log["runs"]:
        _require(run, ["tool"], "run")
        driver = run["tool"]["driver"]
        _require(driver, ["name"], "tool.driver")
        rules = driver.get("rules", [])
        for rule in rules:
            _require(rule, ["id"], "reportingDescriptor")
            for text_key in ("shortDescription", "fullDescription", "help"):
                if text_key in rule:
                    _require(rule[text_key], ["text"], f"rule.{text_key}")
            assert rule.get("defaultConfiguration", {}).get("level", "warning") in ("none", "note", "warning", "error")
        for result in run["results"]:
            _require(result, ["message", "ruleId", "locations"], "result")  # ruleId, locations: GitHub
            assert "text" in result["message"] or "id" in result["message"]
            assert result.get("level", "warning") in ("none", "note", "warning", "error")
            if "ruleIndex" in result:
                assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                uri = physical["artifactLocation"]["uri"]
                assert uri and not uri.startswith("/"), "GitHub wants URIs relative to the repository root"
                region = physical["region"]
                assert region["startLine"] >= 1 and region.get("startColumn", 1) >= 1
                assert region.get("endLine", region["startLine"]) >= region["startLine"]


def test_sarif_is_valid_and_carries_rule_docs(tmp_path, gradlint):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text(SOURCE)
    code, out, _ = gradlint(tmp_path, "check", "--output-format", "sarif", ".")
    assert code == 1
    log = json.loads(out)
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "gradlint"
    assert [r["ruleId"] for r in run["results"]] == ["GL001", "GL001"]
    assert run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/model.py"
    assert run["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 5
    [rule] = run["tool"]["driver"]["rules"]
    assert rule["id"] == "GL001" and "## Why is this bad?" in rule["help"]["markdown"]


def test_sarif_without_findings_is_valid(tmp_path, gradlint):
    (tmp_path / "ok.py").write_text("x = 1\n")
    code, out, _ = gradlint(tmp_path, "check", "--output-format", "sarif", ".")
    log = json.loads(out)
    assert code == 0 and log["runs"][0]["results"] == []
    assert_valid_sarif(log)


def test_json_reports_unsafe_fixes_with_their_applicability(tmp_path, gradlint):
    (tmp_path / "model.py").write_text(SOURCE)
    _, out, _ = gradlint(tmp_path, "check", "--output-format", "json", ".")
    fixes = [item["fix"]["applicability"] for item in json.loads(out)]
    assert fixes == ["safe", "unsafe"]
