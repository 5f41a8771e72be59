"""GE2E d-vector speaker embedding (Resemblyzer's pretrained weights) as a pyannote.audio `Model`.

Resemblyzer ships the only speaker-embedding weights we can get without a model hub. It is wrapped as a
`pyannote.audio.Model` so that pyannote's own `SpeakerDiarization` pipeline uses it unchanged through
`PretrainedSpeakerEmbedding(model)`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from torch import nn

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # 10 ms mel frames, as Resemblyzer
N_FFT = 400  # 25 ms window, as Resemblyzer
N_MELS = 40
EMBEDDING_DIM = 256
PARTIAL_FRAMES = 160  # GE2E was trained and is used on 1.6 s partial utterances
PARTIAL_STEP = 77  # Resemblyzer's default of 1.3 partials per second
TARGET_DBFS = -30.0  # Resemblyzer's speech level before the mel
# Frames this far below an item's loud frames are pauses: dropped, standing in for Resemblyzer's webrtcvad trimming.
SILENCE_GATE_DB = 15.0
# Less speech than this gives d-vectors far from both speakers, which break agglomerative clustering
# (measured: benchmarks/diarization_tuning.py). Such items get NaN, as pyannote's own WeSpeaker ONNX wrapper does.
MIN_SPEECH_SECONDS = 1.0


def resemblyzer_weights_path() -> Path | None:
    """Resemblyzer's `pretrained.pt`, found without importing the package (it imports webrtcvad, not installed)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "pretrained.pt"
    return path if path.is_file() else None


class GE2EEmbedding(Model):
    """Resemblyzer's 3-layer LSTM d-vector: 40-band mel power → 256-d, ReLU, L2-normalised.

    `forward(waveforms (B, 1, N), weights (B, F) | None)` embeds, per item, only the frames where `weights`
    is positive (the pipeline's speaker masks, resampled to mel frames), cut in 1.6 s partials whose
    embeddings are averaged and L2-normalised, as Resemblyzer's `embed_utterance`. Before that, pauses are
    dropped and the speech level is set to -30 dBFS. An item with less than `min_speech_seconds` of speech
    gets NaN, which pyannote's clustering leaves out; a waveform shorter than that without weights raises
    ValueError (pyannote probes `min_num_samples` that way).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, num_channels: int = 1, min_speech_seconds: float = MIN_SPEECH_SECONDS) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels)
        self.save_hyperparameters("min_speech_seconds")
        self.min_num_samples = round(min_speech_seconds * sample_rate)
        self.min_speech_frames = round(min_speech_seconds * sample_rate / HOP_LENGTH)
        # Same filterbank as librosa.feature.melspectrogram's defaults (Slaney scale and norm, periodic Hann).
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, power=2.0, norm="slaney", mel_scale="slaney"
        )
        self.lstm = nn.LSTM(N_MELS, EMBEDDING_DIM, num_layers=3, batch_first=True)
        self.linear = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION,
            resolution=Resolution.CHUNK,
            duration=PARTIAL_FRAMES * HOP_LENGTH / sample_rate,
            min_duration=min_speech_seconds,
        )

    @classmethod
    def from_resemblyzer(cls, weights_path: Path, min_speech_seconds: float = MIN_SPEECH_SECONDS) -> GE2EEmbedding:
        model = cls(min_speech_seconds=min_speech_seconds)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)["model_state"]
        # The checkpoint also holds GE2E's training-only similarity scale/bias: skip them.
        model.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}, strict=False)
        return model.eval()

    @property
    def dimension(self) -> int:
        return EMBEDDING_DIM

    def mel_frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) → (B, T, 40) mel power, T = 1 + N // 160 (centred frames, zero padded)."""
        return self.mel(waveforms[:, 0]).transpose(1, 2)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, num_samples = waveforms.shape
        if num_samples < self.min_num_samples:
            raise ValueError(f"GE2E needs at least {self.min_num_samples} samples, got {num_samples}")
        active = active_frames(weights, batch, 1 + num_samples // HOP_LENGTH, waveforms.device)
        return self.embed_masked(waveforms[:, 0], active, torch.arange(batch, device=waveforms.device))

    def forward_speakers(self, waveforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(C, 1, N) chunks and (C, S, F) masks → (C, S, 256): each chunk's mel once for all its speakers."""
        chunks, speakers, frames = weights.shape
        active = active_frames(
            weights.reshape(chunks * speakers, frames), chunks * speakers, 1 + waveforms.shape[2] // HOP_LENGTH, waveforms.device
        )
        owners = torch.arange(chunks, device=waveforms.device).repeat_interleave(speakers)
        return self.embed_masked(waveforms[:, 0], active, owners).reshape(chunks, speakers, EMBEDDING_DIM)

    def embed_masked(self, audio: torch.Tensor, active: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """(P, 256): item p embeds the frames `active[p]` of the waveform `audio[owners[p]]` ((C, N) audio, (P, T) masks)."""
        embeddings = torch.full((active.shape[0], EMBEDDING_DIM), float("nan"), device=audio.device)
        candidates = (active.sum(dim=1) >= self.min_speech_frames).nonzero()[:, 0]
        if candidates.numel() == 0:
            return embeddings  # inactive speakers (or too little speech): no mel, no LSTM
        chunks, chunk_of = torch.unique(owners[candidates], return_inverse=True)
        mels = self.mel_frames(audio[chunks][:, None])[chunk_of]
        speech = active[candidates] & ~pauses(mels, active[candidates])
        keep = speech.sum(dim=1) >= self.min_speech_frames
        if not keep.any():
            return embeddings
        items, mels, speech = candidates[keep], mels[keep], speech[keep]
        mels = mels * volume_gain(audio[owners[items]], speech)[:, None, None]
        windows, partial_owners = partial_windows(mels, speech)
        sums = torch.zeros(items.numel(), EMBEDDING_DIM, device=mels.device).index_add_(0, partial_owners, self.embed_partials(windows))
        # an all-zero ReLU output has no direction: NaN, not a zero vector that breaks cosine distances
        embeddings[items] = torch.where(sums.norm(dim=1, keepdim=True) > 0, F.normalize(sums, dim=1), float("nan"))
        return embeddings

    def embed_partials(self, windows: torch.Tensor) -> torch.Tensor:
        """(W, 160, 40) mel partials → (W, 256) unit d-vectors (Resemblyzer's VoiceEncoder.forward)."""
        _, (hidden, _) = self.lstm(windows)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1)


def active_frames(weights: torch.Tensor | None, batch: int, num_frames: int, device: torch.device) -> torch.Tensor:
    """(B, T) bool: the pipeline's (B, F) frame masks resampled (nearest) onto the mel frames."""
    if weights is None:
        return torch.ones(batch, num_frames, dtype=torch.bool, device=device)
    resampled = F.interpolate(weights[:, None].float(), size=num_frames, mode="nearest")[:, 0]
    return resampled > 0.5  # as pyannote's own WeSpeaker wrapper


def pauses(mels: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: active frames more than SILENCE_GATE_DB below the item's loud (95th percentile) frames."""
    energy_db = 10 * torch.log10(mels.sum(dim=2) + 1e-12)
    loud_db = torch.nanquantile(energy_db.masked_fill(~active, float("nan")), 0.95, dim=1, keepdim=True)
    return active & (energy_db < loud_db - SILENCE_GATE_DB)


def volume_gain(waveforms: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """(B,) power gain setting each item's active speech to -30 dBFS. Resemblyzer only raises quiet speech;
    we also lower loud speech: the LSTM reads linear mel power, so the level moves the d-vector (measured on
    the 10x sample with a different gain per repeat)."""
    batch, num_frames = active.shape
    # mean square of the 160 samples around each (centred) mel frame
    squared = F.pad(waveforms.square(), (HOP_LENGTH // 2, HOP_LENGTH // 2))
    squared = F.pad(squared, (0, max(0, num_frames * HOP_LENGTH - squared.shape[1])))
    frame_power = squared[:, : num_frames * HOP_LENGTH].reshape(batch, num_frames, HOP_LENGTH).mean(dim=2)
    count = active.sum(dim=1).clamp(min=1)
    speech_power = ((frame_power * active).sum(dim=1) / count).clamp(min=1e-10)
    return 10 ** ((TARGET_DBFS - 10 * torch.log10(speech_power)) / 10)


def partial_starts(num_frames: int) -> list[int]:
    """Start frames of the 160-frame partials over `num_frames` active frames (Resemblyzer's
    `compute_partial_slices` at rate 1.3, min_coverage 0.75: a last partial less than 3/4 full is dropped)."""
    steps = max(1, num_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1)
    starts = list(range(0, steps, PARTIAL_STEP))
    if len(starts) > 1 and (num_frames - starts[-1]) / PARTIAL_FRAMES < 0.75:
        starts.pop()
    return starts


def partial_windows(mels: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each item's (non-empty) active frames and cut them into zero-padded partials.

    Returns (W, 160, 40) windows of all items together (one LSTM batch) and (W,) the item each belongs to.
    """
    windows: list[torch.Tensor] = []
    owners: list[int] = []
    for item, (mel, mask) in enumerate(zip(mels, active, strict=True)):
        frames = mel[mask]
        starts = partial_starts(frames.shape[0])
        padded = F.pad(frames, (0, 0, 0, max(0, starts[-1] + PARTIAL_FRAMES - frames.shape[0])))
        windows.extend(padded[start : start + PARTIAL_FRAMES] for start in starts)
        owners.extend([item] * len(starts))
    return torch.stack(windows), torch.tensor(owners, device=mels.device)
