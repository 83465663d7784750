"""Build and launch the Gradio app (placeholder until the app issue lands)."""
from __future__ import annotations

import argparse


def build_demo():
    import gradio as gr

    with gr.Blocks(title="ProLab Explorer") as demo:
        gr.Markdown("# ProLab Explorer\nProperty-level semantic segmentation.")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ProLab Explorer app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args(argv)
    build_demo().queue().launch(server_name=args.host, server_port=args.port, share=args.share)
