from __future__ import annotations

import pytest

from kernel import Kernel


@pytest.fixture
def kernel(tmp_path):
    """A fresh kernel with daglite_nb loaded, in a temporary working directory."""
    k = Kernel(cwd=str(tmp_path))
    k.ok("%load_ext daglite_nb")
    yield k
    k.close()


def _apply_display_updates_in_nbval() -> None:
    """Have nbval apply `update_display_data` to the outputs it compares, as frontends do.

    daglite-nb's widgets replace their outputs' static text and HTML with the final outcome
    (`update_display_data`). JupyterLab and nbclient, which saved the tutorial notebooks, apply
    such updates; nbval skips them and compares each output as first displayed. With this,
    nbval compares the outcome that a saved notebook holds. The data nbval keeps of an output
    is the very dict of its message, so the update is applied to it in place.
    """
    from nbval.plugin import IPyNbFile

    receive = IPyNbFile.get_kernel_message
    shown: dict[str, dict] = {}

    def get_kernel_message(self, timeout=None, stream="iopub"):
        message = receive(self, timeout=timeout, stream=stream)
        content = message.get("content", {})
        display_id = content.get("transient", {}).get("display_id")
        if message["msg_type"] == "display_data" and display_id:
            shown[display_id] = content["data"]
        elif message["msg_type"] == "update_display_data":
            data = shown.get(display_id)
            if data is not None:
                data.clear()
                data.update(content["data"])
            message["msg_type"] = "comm_msg"  # a kind nbval passes over
        return message

    IPyNbFile.get_kernel_message = get_kernel_message


_apply_display_updates_in_nbval()
