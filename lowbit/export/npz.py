"""The npz format: a Program as packed k-bit weight codes, float scales and a JSON layout.

Arrays (numpy's savez_compressed; load with allow_pickle=False):

    meta                  JSON string: format, arch, stem / block / layer layout, bits,
                          quantizer kinds and per-layer scales (docs/export.md)
    <layer>.codes         uint8, the layer's unsigned k-bit weight codes packed
                          (pack.py; DoReFa q = (w_int + n) / 2, LSQ w_int + 2^(k-1))
    <layer>.scale/.shift  float64 (C_out,): y = acc * scale + shift (BN folded)
    stem.weight           float32 (C, 3, k, k); stem.scale / .shift float64 (BN folded)
    fc.weight, fc.bias    float32 (classes, C), (classes,)
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.export.codes import from_stored, stored_codes
from lowbit.export.pack import pack_codes, unpack_codes
from lowbit.export.program import FORMAT, ActQuant, Block, ExportError, IntConv, Program, Stem


def _layer_meta(layer: IntConv) -> dict[str, Any]:
    return {
        "name": layer.name,
        "shape": list(layer.weight.shape),
        "w_bits": layer.w_bits,
        "w_kind": layer.w_kind,
        "w_scale": layer.w_scale,
        "act": layer.act.to_dict(),
        "act_scale": layer.act.scale,
        "source": layer.source,
        "stride": list(layer.stride),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
        "groups": layer.groups,
    }


def _meta(program: Program) -> dict[str, Any]:
    st = program.stem
    blocks = [
        {
            "name": b.name,
            "convs": [_layer_meta(c) for c in b.convs],
            "downsample": None if b.downsample is None else _layer_meta(b.downsample),
            "out": None if b.out is None else b.out.to_dict(),
        }
        for b in program.blocks
    ]
    stem = {"stride": list(st.stride), "padding": list(st.padding), "maxpool": st.maxpool}
    return {"format": FORMAT, "arch": program.arch, "stem": stem, "blocks": blocks}


def program_to_npz(program: Program) -> bytes:
    """The npz file's bytes (written by the caller, atomically)."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(_meta(program)))}
    for layer in program.layers():
        codes = stored_codes(layer.weight, layer.w_kind, layer.w_bits)
        arrays[f"{layer.name}.codes"] = pack_codes(codes, layer.w_bits)
        arrays[f"{layer.name}.scale"] = layer.scale
        arrays[f"{layer.name}.shift"] = layer.shift
    st = program.stem
    arrays.update({"stem.weight": st.weight, "stem.scale": st.scale, "stem.shift": st.shift})
    arrays.update({"fc.weight": program.fc_weight, "fc.bias": program.fc_bias})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _layer(meta: dict[str, Any], arrays: Any) -> IntConv:
    name, bits, shape = meta["name"], int(meta["w_bits"]), tuple(meta["shape"])
    codes = unpack_codes(arrays[f"{name}.codes"], bits, int(np.prod(shape)))
    return IntConv(
        name=name,
        weight=from_stored(codes, meta["w_kind"], bits).reshape(shape).astype(np.int32),
        w_bits=bits,
        w_kind=meta["w_kind"],
        w_scale=float(meta["w_scale"]),
        act=ActQuant(**meta["act"]),
        source=meta["source"],
        stride=tuple(meta["stride"]),
        padding=tuple(meta["padding"]),
        dilation=tuple(meta["dilation"]),
        groups=int(meta["groups"]),
        scale=arrays[f"{name}.scale"],
        shift=arrays[f"{name}.shift"],
    )


def _program(meta: dict[str, Any], arrays: Any) -> Program:
    blocks = []
    for b in meta["blocks"]:
        ds = None if b["downsample"] is None else _layer(b["downsample"], arrays)
        out = None if b["out"] is None else ActQuant(**b["out"])
        blocks.append(Block(b["name"], [_layer(c, arrays) for c in b["convs"]], ds, out))
    s = meta["stem"]
    stem = Stem(
        weight=arrays["stem.weight"],
        stride=tuple(s["stride"]),
        padding=tuple(s["padding"]),
        scale=arrays["stem.scale"],
        shift=arrays["stem.shift"],
        maxpool=None if s["maxpool"] is None else tuple(s["maxpool"]),
    )
    return Program(meta["arch"], stem, blocks, arrays["fc.weight"], arrays["fc.bias"])


def program_from_npz(source: Path | bytes) -> Program:
    """Read a Program back; a file that is not a lowbit npz is one ExportError line."""
    where = "npz data" if isinstance(source, bytes) else str(source)
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT:
            raise ExportError(f"{where} is format {meta.get('format')!r}, not {FORMAT}")
        return _program(meta, arrays)
    except ExportError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise ExportError(f"cannot read {where} as a lowbit integer export: {e}") from None
