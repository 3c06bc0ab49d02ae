"""Joint knowledge distillation, KD (paper §4, from the authors' code).

One full-precision teacher and M low-precision students are trained at the same time;
the teacher is updated too. With logits z, p^T = softmax(z / T) and KL(p || q) summed
over classes and averaged over the batch:

    student j: L_s = λ_s CE(z_s, y) + λ_skl T² KL(p_t^T [detached] || p_s^T)
    teacher:   L_t = λ_t CE(z_t, y) + λ_tkl T² mean_j KL(p_sj^T [detached] || p_t^T)

Per iteration: teacher forward; each student forward, loss, backward, step; the
teacher's loss uses the students' logits from before their update (detached); teacher
backward, step. `loss="mse"` replaces each KL term by the mean squared error between
the logits (no T²), the authors' variant. An optional L2 "hint" (weight β, CVPR
version) pulls each student's residual-stage outputs towards the teacher's [lowbit:
stage outputs as the hint points].

Example:
    >>> import torch
    >>> from lowbit.methods import kd_losses
    >>> zt, zs, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    >>> ls, lt = kd_losses(zt, [zs], y)
    >>> round(float(ls[0]), 4), round(float(lt), 4)  # 0.7*CE + 0.7*KL ; 1*CE + 0.5*KL
    (0.7147, 0.3438)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lowbit.engine import StepOut, Trainee, autocast, optimizer_step, unwrap
from lowbit.identity import FP_STAGE, bits_token
from lowbit.methods.base import Context, Recipe


@dataclass(frozen=True)
class KDWeights:
    temperature: float = 1.0
    lambda_t: float = 1.0
    lambda_s: float = 0.7
    lambda_tkl: float = 0.5
    lambda_skl: float = 0.7
    loss: str = "kl"  # "kl" | "mse"
    hint_beta: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        for k in ("lambda_t", "lambda_s", "lambda_tkl", "lambda_skl", "hint_beta"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be non-negative, got {getattr(self, k)}")
        if self.loss not in ("kl", "mse"):
            raise ValueError(f"loss must be 'kl' or 'mse', got {self.loss!r}")


def distill_term(target_logits: Tensor, logits: Tensor, w: KDWeights) -> Tensor:
    """T² KL(softmax(target/T) || softmax(logits/T)), batch mean; or the logits' MSE.

    `target_logits` must already be detached by the caller.
    """
    if w.loss == "mse":
        return F.mse_loss(logits, target_logits)
    t = w.temperature
    log_q = F.log_softmax(logits / t, dim=1)  # (N, C)
    p = F.softmax(target_logits / t, dim=1)
    return t * t * F.kl_div(log_q, p, reduction="batchmean")


def kd_losses(
    z_t: Tensor, z_students: Sequence[Tensor], y: Tensor, w: KDWeights = KDWeights()
) -> tuple[list[Tensor], Tensor]:
    """The students' losses and the teacher's loss for one batch (no hint term)."""
    students = [
        w.lambda_s * F.cross_entropy(z_s, y) + w.lambda_skl * distill_term(z_t.detach(), z_s, w)
        for z_s in z_students
    ]
    kl_t = torch.stack([distill_term(z_s.detach(), z_t, w) for z_s in z_students]).mean()
    teacher = w.lambda_t * F.cross_entropy(z_t, y) + w.lambda_tkl * kl_t
    return students, teacher


class _StageOutputs:
    """Forward hooks capturing residual-stage outputs (layer1.. layer4) for the hint."""

    def __init__(self, model: nn.Module) -> None:
        names = [n for n, _ in model.named_children() if n.startswith("layer")]
        self.outputs: dict[str, Tensor] = {}
        for n in names:
            getattr(model, n).register_forward_hook(self._hook(n))

    def _hook(self, name: str):
        def save(_m: nn.Module, _inp: object, out: Tensor) -> None:
            self.outputs[name] = out

        return save


class JointDistillation:
    """Engine objective: trainees[0] is the main student, trainees[-1] the FP teacher,
    any trainees in between are further students (e.g. 4-bit beside 2-bit)."""

    def __init__(
        self, weights: KDWeights = KDWeights(), hint_models: Sequence[nn.Module] = ()
    ) -> None:
        self.w = weights
        self.hints = (
            {id(unwrap(m)): _StageOutputs(unwrap(m)) for m in hint_models}
            if weights.hint_beta
            else {}
        )

    def _hint(self, student: nn.Module, teacher: nn.Module) -> Tensor:
        s = self.hints[id(unwrap(student))].outputs
        t = self.hints[id(unwrap(teacher))].outputs
        terms = [F.mse_loss(s[k], t[k].detach()) for k in s if k in t]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def __call__(self, trainees: Sequence[Trainee], x: Tensor, y: Tensor) -> dict[str, StepOut]:
        *students, teacher = trainees
        if not students:
            raise ValueError("joint distillation needs at least one student")
        out: dict[str, StepOut] = {}
        amp = teacher.precision
        with autocast(x.device, amp):
            z_t = teacher.model(x)
        student_logits = []
        for s in students:
            with autocast(x.device, amp):
                z_s = s.model(x)
                loss = self.w.lambda_s * F.cross_entropy(z_s, y) + self.w.lambda_skl * distill_term(
                    z_t.detach().float(), z_s.float(), self.w
                )
                if self.hints:
                    loss = loss + self.w.hint_beta * self._hint(s.model, teacher.model)
            optimizer_step(s, loss)
            student_logits.append(z_s.detach())
            out[s.name] = StepOut(loss.detach(), z_s.detach())
        with autocast(x.device, amp):
            kl = torch.stack(
                [distill_term(z.float(), z_t.float(), self.w) for z in student_logits]
            ).mean()
            loss_t = self.w.lambda_t * F.cross_entropy(z_t, y) + self.w.lambda_tkl * kl
        optimizer_step(teacher, loss_t)
        out[teacher.name] = StepOut(loss_t.detach(), z_t.detach())
        return out


class JointDistillationAddOn:
    """Add-on of any quantized stage whose section sets `kd:` (the stage `distill` sets it
    by default): an FP teacher (from pretraining, or from scratch), the extra students of
    `students` (each at w = a bits, from pretraining), the teacher's own lr if given, and
    the joint objective over all of them."""

    name = "kd"

    def recipe(self, ctx: Context) -> Recipe:
        kd, p = ctx.cfg.params.kd, ctx.cfg.params
        students = getattr(p, "students", [])
        need = kd.teacher_init == "pretrain" or (students and p.init != "scratch")
        pre = ctx.load(ctx.cfg.run.init(FP_STAGE)) if need else None
        # extra students start from pretraining, unless the stage trains from scratch
        start = pre if p.init != "scratch" else None
        nets = {bits_token(b, b): ctx.build(start, b, b) for b in students}
        nets["teacher"] = ctx.float_net(pre if kd.teacher_init == "pretrain" else None)
        weights = KDWeights(**kd.model_dump(exclude={"teacher_lr", "teacher_init"}))

        def objective(all_nets: dict[str, nn.Module]) -> JointDistillation:
            return JointDistillation(weights, hint_models=list(all_nets.values()))

        lr = {"teacher": kd.teacher_lr} if kd.teacher_lr else {}
        # the extra students take the stage's hooks like the student; the FP teacher none
        hooked = tuple(n for n in nets if n != "teacher")
        return Recipe(self.name, nets=nets, hooked=hooked, lr=lr, objective=objective)


JOINT_DISTILLATION = JointDistillationAddOn()
