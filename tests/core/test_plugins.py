"""core.plugins: domains found through entry points, imported only when named, and a missing
extra named in the error."""

import subprocess
import sys

import pytest

from mixerzoo.core import plugins, registry
from mixerzoo.core.plugins import MissingExtraError, domain_of, domain_of_model, require


def test_the_installed_domains_are_the_entry_points():
    assert set(plugins.domain_modules()) >= {"timeseries", "vision", "medical", "audio", "rl"}
    assert plugins.domain_modules()["timeseries"] == "mixerzoo.timeseries"


def test_names_map_to_domains_without_imports_and_a_lookup_imports_one_domain():
    """In a fresh process: class paths and model names are mapped to their domain by reading, not
    importing; then create_model imports the one domain that registers the name."""
    code = (
        "import sys\nfrom mixerzoo.core.plugins import domain_of, domain_of_model\n"
        "from mixerzoo.core import create_model\n"
        "domains = lambda: sorted(m for m in sys.modules if m.count('.') == 1"
        " and m.startswith('mixerzoo.') and m != 'mixerzoo.core')\n"
        "print(domain_of('mixerzoo.timeseries.models.ITransformer'), domain_of('ForecastTask'),"
        " domain_of('torch.optim.Adam'), domain_of('mixerzoo.core.schedulers.HalvingLR'),"
        " domain_of('NoSuchClass'), domain_of_model('s_mamba'))\n"
        "print(domains())\n"
        "create_model('itransformer', seq_len=8, pred_len=2, d_model=8, d_ff=8, n_heads=2)\n"
        "print(domains())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found, before, after = out.stdout.strip().splitlines()
    assert found == "('timeseries',) ('timeseries',) () () () ('timeseries',)"
    assert before == "[]" and after == "['mixerzoo.timeseries']"


def test_require_names_the_extra_of_a_missing_module():
    with pytest.raises(MissingExtraError, match=r'pip install "mixerzoo\[medical\]"') as info:
        require("surely_not_an_installed_module_4821", extra="medical")
    assert isinstance(info.value, ImportError)
    assert info.value.name == "surely_not_an_installed_module_4821"
    assert require("math", extra="medical").sqrt(4.0) == 2.0


def test_importing_a_domain_without_its_extra_says_which_extra_to_install():
    """pandas made unimportable (None in sys.modules) before the time-series domain is imported."""
    code = (
        "import sys\nsys.modules['pandas'] = None\n"
        "try:\n    import mixerzoo.timeseries\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'pandas' is needed by the mixerzoo extra [timeseries]" in out.stdout
    assert 'pip install "mixerzoo[timeseries]"' in out.stdout


def test_an_unknown_model_names_the_domains_whose_extra_is_missing(tmp_path, monkeypatch):
    """A fake installed domain whose import needs a missing package."""
    package = tmp_path / "fake_domain_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from mixerzoo.core.plugins import require\n"
        "require('surely_not_an_installed_module_4821', extra='fake')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "domain_modules", lambda: {"fake": "fake_domain_pkg"})
    monkeypatch.setattr(plugins, "_source_index", lambda: ({}, {}))
    monkeypatch.setattr(registry, "_MODELS", registry._Registry("model", domains=True))
    with pytest.raises(registry.UnknownNameError) as info:
        registry.create_model("fake_model")
    message = str(info.value)
    assert "Domain 'fake' is not available" in message and 'pip install "mixerzoo[fake]"' in message
    assert registry.unavailable_domains().keys() == {"fake"}
    assert domain_of_model("fake_model") == ()
    assert domain_of("fake_domain_pkg.Thing") == ("fake",)
