import subprocess
import sys


def test_import_adaptlab_loads_no_heavy_dependency():
    code = ("import adaptlab, adaptlab.cli, adaptlab.config, adaptlab.data, sys; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'sentence_transformers') if m in sys.modules]; "
            "print(heavy); assert not heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lazy_api_names_resolve():
    import adaptlab

    assert callable(adaptlab.tune) and callable(adaptlab.run)
    assert adaptlab.GenParams(max_new_tokens=3).max_new_tokens == 3
