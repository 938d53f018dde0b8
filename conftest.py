"""Project-wide pytest setup: what the notebook tests (`pytest --nbval notebooks/`) need."""

from __future__ import annotations


def _apply_display_updates_in_nbval() -> None:
    """Have nbval apply `update_display_data` to the outputs it compares, as frontends do.

    daglite-nb's widgets replace their outputs' static text and HTML with the final outcome
    (`update_display_data`). JupyterLab and nbclient, which saved the tutorial notebooks, apply
    such updates; nbval skips them and compares each output as first displayed. With this,
    nbval compares the outcome that a saved notebook holds. nbval keeps the data of a displayed
    output as it finds it in the message when that is a `NotebookNode` already, so the data is
    made one here, kept, and updated in place.
    """
    from nbformat import from_dict
    from nbval.plugin import IPyNbFile

    receive = IPyNbFile.get_kernel_message
    shown: dict[str, dict] = {}

    def get_kernel_message(self, timeout=None, stream="iopub"):
        message = receive(self, timeout=timeout, stream=stream)
        content = message.get("content", {})
        display_id = content.get("transient", {}).get("display_id")
        if message["msg_type"] == "display_data" and display_id:
            content["data"] = shown[display_id] = from_dict(content["data"])
        elif message["msg_type"] == "update_display_data":
            data = shown.get(display_id)
            if data is not None:
                data.clear()
                data.update(from_dict(content["data"]))
            message["msg_type"] = "comm_msg"  # a kind nbval passes over
        return message

    IPyNbFile.get_kernel_message = get_kernel_message


_apply_display_updates_in_nbval()
