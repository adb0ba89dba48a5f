"""The ICT head fitted to 2D landmarks: one batched torch fitter for single photos and for
people seen in many photos.

Camera: weak perspective (scale, rotation, 2D translation), which suits faces filling a
photo. Shape: the model's 100 identity modes (weights ~ N(0, 1)) and 53 expressions
(weights in [0, 1]). Every photo has its own camera and expression; photos of one
`group` share one identity vector (CFP: a person's 10 frontals and 4 profiles, so the
profiles fix the depth the frontals cannot see and the frontals the widths; 300-W: every
face its own group). The cost is a Cauchy (robust) reprojection error in units of the
annotation noise, plus the Gaussian identity prior and a pull of expressions to neutral:
a MAP fit. Profiles get several starts (left- and right-facing, either visible half).
On profiles a one-sided term keeps the far half behind the annotated silhouette
(`HiddenSide`): the marked points alone barely fix a profile's yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.engine.facemodel import FaceModel
from training.engine.geometry import vertex_normals
from training.realfit.correspondence import SCHEMES, Correspondences


@dataclass(frozen=True)
class FitSettings:
    noise: float = 0.02  # landmark noise, as a fraction of the landmarks' box side
    identity_prior: float = 1.0  # weight of 0.5 |w_id|^2 (1 = the model's own prior)
    expression_prior: float = 2.0  # weight of |w_exp|^2
    rigid_steps: int = 8  # Gauss-Newton steps per start, mean face
    steps: int = 15  # Gauss-Newton steps of all parameters, from the best start
    silhouette_nz: float = 0.3  # a candidate is on the silhouette when |n_z| is below this


@dataclass
class FitInput:
    points: torch.Tensor  # (B, L, 2) pixels
    scheme: list[str]  # per photo
    group: torch.Tensor  # (B,) long: photos of one group share one identity
    starts: list[list[tuple[str, float]]]  # per photo: (side, yaw in degrees) to try
    identity: torch.Tensor | None = None  # (B, I): fit with these identities held fixed


@dataclass
class Fit:
    rotation: torch.Tensor  # (B, 3, 3) model -> camera (x right, y up, z to the camera)
    scale: torch.Tensor  # (B,) pixels per cm
    translation: torch.Tensor  # (B, 2) pixels of the model origin (x right, y down)
    identity: torch.Tensor  # (B, I) (equal within a group)
    expression: torch.Tensor  # (B, E)
    side: list[str]
    vertex: torch.Tensor  # (B, L) the vertex each landmark ended on
    residual: torch.Tensor  # (B, L) pixels


@dataclass
class HiddenSide:
    """Far-side vertices that must project behind each photo's annotated outline.

    The outline is the polyline of a profile's silhouette landmarks (`Scheme.outline`);
    a far-side vertex whose image point lies beyond it, on the side the face looks to, is
    pulled back horizontally onto it. Photos without an outline have `active` False.
    """

    vertex: torch.Tensor  # (B, Q) far-side vertices
    outline: torch.Tensor  # (B, K) landmark rows of the outline, top to bottom
    active: torch.Tensor  # (B,) bool

    def targets(
        self, points: torch.Tensor, xy: torch.Tensor, margin: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (B, Q, 2) for the far-side points at `xy` (B, Q, 2), and the (B, Q, 2)
        mask of the residuals that count (x only, where the point is beyond the outline by
        more than `margin`, the annotation noise: the polyline through a few silhouette
        points cuts the true outline's corners)."""
        line = points.gather(1, self.outline[..., None].expand(-1, -1, 2))
        order = line[..., 1].argsort(1)
        line = line.gather(1, order[..., None].expand(-1, -1, 2))
        ly, lx = line[..., 1].contiguous(), line[..., 0]
        y = torch.maximum(torch.minimum(xy[..., 1], ly[:, -1:]), ly[:, :1]).contiguous()
        hi = torch.searchsorted(ly, y).clamp(1, ly.shape[1] - 1)
        y0, y1 = ly.gather(1, hi - 1), ly.gather(1, hi)
        x0, x1 = lx.gather(1, hi - 1), lx.gather(1, hi)
        x_line = x0 + ((y - y0) / (y1 - y0).clamp_min(1e-6)).clamp(0, 1) * (x1 - x0)
        # the face looks to the side its outline is on
        facing = torch.sign(lx.mean(1) - points[..., 0].mean(1))[:, None]
        x_line = x_line + facing * margin
        beyond = (facing * (xy[..., 0] - x_line) > 0) & self.active[:, None]
        target = torch.stack([torch.where(beyond, x_line, xy[..., 0]), xy[..., 1]], -1)
        mask = torch.stack([beyond, torch.zeros_like(beyond)], -1).float()
        return target, mask

    def __getitem__(self, index) -> HiddenSide:
        return HiddenSide(self.vertex[index], self.outline[index], self.active[index])


def rodrigues(v: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle -> (B, 3, 3) rotation."""
    theta = v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = v / theta
    zero = torch.zeros_like(k[:, 0])
    skew = torch.stack([
        torch.stack([zero, -k[:, 2], k[:, 1]], -1),
        torch.stack([k[:, 2], zero, -k[:, 0]], -1),
        torch.stack([-k[:, 1], k[:, 0], zero], -1),
    ], -2)  # fmt: skip
    t = theta[..., None]
    eye = torch.eye(3).expand_as(skew)
    return eye + t.sin() * skew + (1 - t.cos()) * skew @ skew


class LandmarkFitter:
    def __init__(
        self,
        model: FaceModel,
        correspondences: Correspondences,
        settings: FitSettings | None = None,
    ):
        self.model = model.to("cpu")
        self.corr = correspondences
        self.settings = settings or FitSettings()
        v = self.model.num_vertices
        self.identity_basis = self.model.identity_basis.view(-1, v, 3)
        self.expression_basis = self.model.expression_basis.view(-1, v, 3)
        self.normals = vertex_normals(self.model.neutral[None], self.model.triangles)[0]

    def shape_at(self, vertex: torch.Tensor, w_id: torch.Tensor, w_exp: torch.Tensor):
        """(B, N) vertex indices -> (B, N, 3) cm for per-photo weights (B, I), (B, E)."""
        ident = torch.einsum("bi,ibnc->bnc", w_id, self.identity_basis[:, vertex])
        expr = torch.einsum("be,ebnc->bnc", w_exp, self.expression_basis[:, vertex])
        return self.model.neutral[vertex] + ident + expr

    def _reselect(self, vertex, patch, points, rotation, scale, translation, w_id, w_exp):
        """Move each contour landmark to its patch's silhouette candidate nearest the point."""
        rows = patch >= 0
        if not rows.any():
            return vertex
        b_idx, l_idx = torch.nonzero(rows, as_tuple=True)
        candidates = self.corr.patch_vertices[patch[b_idx, l_idx]]  # (N, K)
        with torch.no_grad():
            # the shape at the patches' vertices once per photo, then gathered per candidate
            union, inverse = candidates.unique(return_inverse=True)
            photos, photo_of = b_idx.unique(return_inverse=True)
            at_union = self.shape_at(union.expand(len(photos), -1), w_id[photos], w_exp[photos])
            pos = at_union[photo_of[:, None], inverse]  # (N, K, 3)
            r = rotation[b_idx]
            cam = pos @ r.transpose(1, 2)
            s = scale[b_idx][:, None]
            xy = torch.stack([cam[..., 0] * s, -cam[..., 1] * s], -1) + translation[b_idx][:, None]
            dist = (xy - points[b_idx, l_idx][:, None]).norm(dim=-1)
            nz = (self.normals[candidates] @ r.transpose(1, 2))[..., 2].abs()
            off = nz > self.settings.silhouette_nz
            # the silhouette candidate nearest the point; where none is, the most edge-on one
            on = ~off
            score = torch.where(on.any(1, keepdim=True), dist + off * 1e9, nz)
            best = candidates.gather(1, score.argmin(1, keepdim=True)).squeeze(1)
        vertex = vertex.clone()
        vertex[b_idx, l_idx] = best
        return vertex

    def _tables(self, schemes: list[str], sides: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.corr.table(sc, sd) for sc, sd in zip(schemes, sides, strict=True)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def _hidden(self, schemes: list[str], sides: list[str]) -> HiddenSide:
        outlines = [SCHEMES[sc].outline for sc in schemes]
        k = max(len(o) for o in outlines)
        outline = torch.tensor([list(o) + [0] * (k - len(o)) if o else [0] * k for o in outlines])
        return HiddenSide(
            torch.stack([self.corr.far_side(sd) for sd in sides]),
            outline,
            torch.tensor([bool(o) for o in outlines]),
        )

    def _solve(self, points, vertex, patch, group, n_groups, rotation, log_scale, translation,
               w_id, w_exp, steps, free_expression, free_identity, hidden):  # fmt: skip
        """Gauss-Newton (IRLS for the Cauchy cost) with a per-group step search.

        Per-photo unknowns: a left rotation increment, log scale, translation and (when
        free) expressions; per-group: identity. The shared identity is solved through the
        Schur complement of the photos' blocks, so a person's 14 photos cost 14 small
        solves and one 100 x 100 one. The far-side points of `hidden` are extra rows whose
        targets and masks are renewed every step.
        """
        st = self.settings
        e_dim, i_dim = w_exp.shape[1], w_id.shape[1]
        p_dim = 6 + (e_dim if free_expression else 0)
        var = st.noise**2
        eye_p = torch.eye(p_dim, dtype=torch.float64)
        landmarks = points.shape[1]
        if hidden.active.any():
            vertex = torch.cat([vertex, hidden.vertex], 1)
            patch = torch.cat([patch, torch.full_like(hidden.vertex, -1)], 1)
            points = torch.cat([points, torch.zeros(*hidden.vertex.shape, 2)], 1)
        mask = torch.ones_like(points)

        def residuals(rot, ls, tr, wid, wexp, base, a_id, a_exp):
            shape = base + torch.einsum("bi,blci->blc", wid[group], a_id)
            shape = shape + torch.einsum("be,blce->blc", wexp, a_exp)
            cam = shape @ rot.transpose(1, 2)
            s = ls.exp()[:, None]
            xy = torch.stack([cam[..., 0] * s, -cam[..., 1] * s], -1) + tr[:, None]
            return (xy - points) * mask, cam

        def costs(r, wid, wexp):
            photo = torch.log1p((r**2).sum(-1) / var).sum(1) + st.expression_prior * (wexp**2).sum(
                1
            )
            per_group = torch.zeros(n_groups, dtype=photo.dtype).index_add_(0, group, photo)
            if free_identity:
                per_group = per_group + 0.5 * st.identity_prior * (wid**2).sum(1)
            return per_group

        for step in range(steps + 1):
            vertex = self._reselect(vertex, patch, points, rotation, log_scale.exp(), translation,
                                    w_id[group], w_exp)  # fmt: skip
            base = self.model.neutral[vertex]
            a_id = self.identity_basis[:, vertex].permute(1, 2, 3, 0)  # (B, L, 3, I)
            a_exp = self.expression_basis[:, vertex].permute(1, 2, 3, 0)  # (B, L, 3, E)
            if points.shape[1] > landmarks:
                mask = torch.ones_like(points)
                r, cam = residuals(rotation, log_scale, translation, w_id, w_exp, base, a_id, a_exp)
                xy = r[:, landmarks:] + points[:, landmarks:]
                points[:, landmarks:], mask[:, landmarks:] = hidden.targets(
                    points[:, :landmarks], xy, st.noise
                )
            r, cam = residuals(rotation, log_scale, translation, w_id, w_exp, base, a_id, a_exp)
            if step == steps:
                break
            s = log_scale.exp()[:, None]
            cx, cy, cz = cam.unbind(-1)
            zero = torch.zeros_like(cx)
            # d(xy)/d(left rotation increment): d cam = -[cam]x delta
            jx = [s * zero, s * cz, -s * cy]
            jy = [s * cz, s * zero, -s * cx]
            cols_x = jx + [s * cx, torch.ones_like(cx), zero]
            cols_y = jy + [-s * cy, zero, torch.ones_like(cx)]
            j_p = torch.stack([torch.stack(cols_x, -1), torch.stack(cols_y, -1)], 2)  # (B,L,2,6)
            if free_expression:
                ra = rotation[:, None] @ a_exp  # (B, L, 3, E)
                j_e = torch.stack([s[..., None] * ra[:, :, 0], -s[..., None] * ra[:, :, 1]], 2)
                j_p = torch.cat([j_p, j_e], -1)
            j_p = j_p * mask[..., None]
            weight = (1.0 / (var + (r**2).sum(-1)))[..., None, None]  # (B, L, 1, 1)
            jw = (j_p * weight).flatten(1, 2).double()  # (B, 2L, P)
            jp = j_p.flatten(1, 2).double()
            rr = r.flatten(1, 2).double()
            h_pp = jw.transpose(1, 2) @ jp
            g_p = (jw.transpose(1, 2) @ rr[..., None]).squeeze(-1)
            if free_expression:
                h_pp[:, 6:, 6:] += st.expression_prior * torch.eye(e_dim, dtype=torch.float64)
                g_p[:, 6:] += st.expression_prior * w_exp.double()
            h_pp = h_pp + 1e-6 * eye_p + 1e-3 * torch.diag_embed(h_pp.diagonal(dim1=1, dim2=2))
            h_inv = torch.linalg.inv(h_pp)
            if free_identity:
                ra = rotation[:, None] @ a_id
                j_q = torch.stack([s[..., None] * ra[:, :, 0], -s[..., None] * ra[:, :, 1]], 2)
                jq = (j_q * mask[..., None]).flatten(1, 2).double()
                h_pq = jw.transpose(1, 2) @ jq  # (B, P, I)
                w = weight.expand(-1, -1, 2, 1).flatten(1, 2).double()  # (B, 2L, 1)
                h_qq = (jq * w).transpose(1, 2) @ jq
                g_q = (jq.transpose(1, 2) @ (rr[..., None] * w)).squeeze(-1)
                hi_pq = h_inv @ h_pq
                schur = torch.zeros(n_groups, i_dim, i_dim, dtype=torch.float64).index_add_(
                    0, group, h_qq - h_pq.transpose(1, 2) @ hi_pq
                )
                rhs = torch.zeros(n_groups, i_dim, dtype=torch.float64).index_add_(
                    0, group, g_q - (hi_pq.transpose(1, 2) @ g_p[..., None]).squeeze(-1)
                )
                schur = schur + st.identity_prior * torch.eye(i_dim, dtype=torch.float64)
                rhs = rhs + st.identity_prior * w_id.double()
                d_q = torch.linalg.solve(schur, rhs)
                d_p = h_inv @ (g_p - (h_pq @ d_q[group][..., None]).squeeze(-1))[..., None]
            else:
                d_q = torch.zeros(n_groups, i_dim, dtype=torch.float64)
                d_p = h_inv @ g_p[..., None]
            d_p, d_q = d_p.squeeze(-1).float(), d_q.float()

            # the best of a few step lengths, per group (none if all raise the cost)
            best_cost = costs(r, w_id, w_exp)
            best_alpha = torch.zeros(n_groups)
            for alpha in (1.0, 0.5, 0.25):
                trial = self._step(
                    rotation,
                    log_scale,
                    translation,
                    w_id,
                    w_exp,
                    d_p,
                    d_q,
                    torch.full((n_groups,), alpha),
                    group,
                    free_expression,
                )
                rt, _ = residuals(*trial, base, a_id, a_exp)
                c = costs(rt, trial[3], trial[4])
                better = c < best_cost
                best_cost = torch.where(better, c, best_cost)
                best_alpha = torch.where(better, alpha, best_alpha)
            rotation, log_scale, translation, w_id, w_exp = self._step(
                rotation, log_scale, translation, w_id, w_exp, d_p, d_q, best_alpha, group,
                free_expression)  # fmt: skip
        photo_cost = torch.log1p((r**2).sum(-1) / var).sum(1)
        vertex, r = vertex[:, :landmarks], r[:, :landmarks]
        return rotation, log_scale, translation, w_id, w_exp, vertex, photo_cost, r

    @staticmethod
    def _step(rotation, log_scale, translation, w_id, w_exp, d_p, d_q, alpha, group,
              free_expression):  # fmt: skip
        a = alpha[group][:, None]
        d_p = d_p * a
        rotation = rodrigues(-d_p[:, :3]) @ rotation
        log_scale = log_scale - d_p[:, 3]
        translation = translation - d_p[:, 4:6]
        if free_expression:
            w_exp = (w_exp - d_p[:, 6:]).clamp(0, 1)
        w_id = w_id - d_q * alpha[:, None]
        return rotation, log_scale, translation, w_id, w_exp

    def fit(self, data: FitInput) -> Fit:
        """Fit every photo of `data`; points are normalised per photo (centre, box side)."""
        st = self.settings
        pts = data.points.float()
        lo, hi = pts.amin(1), pts.amax(1)
        centre, side = (lo + hi) / 2, (hi - lo).amax(-1).clamp_min(1.0)
        points = (pts - centre[:, None]) / side[:, None, None]
        i_dim, e_dim = self.identity_basis.shape[0], self.expression_basis.shape[0]

        # 1. Rigid fits of the mean face from every start; keep each photo's best.
        photo_of, sides, yaws = [], [], []
        for b, starts in enumerate(data.starts):
            for sd, yaw in starts:
                photo_of.append(b)
                sides.append(sd)
                yaws.append(yaw)
        photo_of = torch.tensor(photo_of)
        k = len(yaws)
        schemes = [data.scheme[b] for b in photo_of.tolist()]
        vertex, patch = self._tables(schemes, sides)
        hidden = self._hidden(schemes, sides)
        rotation = rodrigues(torch.stack([torch.zeros(k), torch.deg2rad(torch.tensor(yaws)) + 1e-6,
                                          torch.zeros(k)], -1))  # fmt: skip
        spread = self.model.neutral[self.corr.landmarks68].std(0)[:2].norm()
        log_scale = (points[photo_of].std(1).norm(dim=-1) / spread).log()
        translation = torch.zeros(k, 2)
        rot, ls, tr, _, _, vtx, cost, _ = self._solve(
            points[photo_of], vertex, patch, torch.arange(k), k, rotation, log_scale,
            translation, torch.zeros(k, i_dim), torch.zeros(k, e_dim), st.rigid_steps,
            False, False, hidden,
        )  # fmt: skip
        # Weak perspective cannot tell a head turned by yaw from one turned by 180 - yaw with
        # its depth reversed; real profiles often fit the latter as well: a face turned
        # away from the camera (beyond 95 degrees) is not a solution.
        cost = torch.where(rot[:, 2, 2] < -0.09, float("inf"), cost)
        best = torch.full((len(data.starts),), -1)
        best_cost = torch.full((len(data.starts),), float("inf"))
        for j, b in enumerate(photo_of.tolist()):
            if cost[j] < best_cost[b]:
                best_cost[b], best[b] = cost[j], j

        # 2. Everything, from the best start; identities shared within groups.
        if data.identity is not None:  # one group per photo, identity held
            group, n_groups = torch.arange(len(data.starts)), len(data.starts)
            w_id = data.identity.float().clone()
        else:
            groups, group = data.group.unique(return_inverse=True)
            n_groups = len(groups)
            w_id = torch.zeros(n_groups, i_dim)
        rot, ls, tr, w_id, w_exp, vtx, cost, r = self._solve(
            points, vtx[best], patch[best], group, n_groups, rot[best], ls[best], tr[best],
            w_id, torch.zeros(len(data.starts), e_dim), st.steps, True, data.identity is None,
            hidden[best],
        )  # fmt: skip
        return Fit(
            rotation=rot,
            scale=ls.exp() * side,
            translation=tr * side[:, None] + centre,
            identity=w_id[group],
            expression=w_exp,
            side=[sides[j] for j in best.tolist()],
            vertex=vtx,
            residual=r.norm(dim=-1) * side[:, None],
        )
