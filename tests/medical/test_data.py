"""Segmentation data: 2-D folders, NIfTI volumes (folders, MSD json, explicit lists), preprocessing,
patches with foreground oversampling, seeded case splits, the NIfTI round trip, bad inputs."""

import gzip
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mixerzoo.medical.data import (
    DataError,
    ImageFolderSegmentation,
    VolumeSegmentation,
    map_labels,
    split_cases,
)


def _folder_dm(root, **kw):
    args = dict(num_classes=2, label_values=[255, 0], patch_size=[32, 32], n_val=2, batch_size=2)
    args.update(kw)
    return ImageFolderSegmentation(str(root), **args)


# --- 2-D folders ---------------------------------------------------------------------------
def test_image_folder_loads_maps_labels_and_normalises(isbi_like):
    dm = _folder_dm(isbi_like)
    dm.setup("fit")
    assert dm.in_channels == 1 and len(dm.train_cases) == 6 and len(dm.val_cases) == 2
    case = dm.train_cases[0]
    stored = np.asarray(Image.open(isbi_like / "label" / f"{case.id}.png"))
    # label_values [255, 0]: stored 255 -> class 0, stored 0 -> class 1.
    assert torch.equal(case.label[0], torch.from_numpy((stored == 0).astype(np.int64)))
    # per-image z-score
    assert abs(case.image.mean().item()) < 1e-4 and abs(case.image.std().item() - 1) < 1e-3


def test_case_split_is_seeded_and_by_case():
    ids = [str(i) for i in range(30)]
    train, val = split_cases(ids, n_val=6, seed=0)
    assert len(val) == 6 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_cases(ids, n_val=6, seed=0) == (train, val)
    assert split_cases(ids, n_val=6, seed=1)[1] != val
    assert split_cases(ids, val_ids=["3", "7"])[1] == ["3", "7"]
    with pytest.raises(DataError, match="not among the cases"):
        split_cases(ids, val_ids=["99"])
    with pytest.warns(UserWarning, match="only one case"):
        assert split_cases(["a"]) == (["a"], ["a"])


def test_training_patches_have_the_patch_size_and_repeat_with_the_seed(isbi_like):
    dm = _folder_dm(isbi_like, samples_per_epoch=6)
    dm.setup("fit")

    def draw(seed):
        torch.manual_seed(seed)
        return [b for b in dm.train_dataloader()]

    first, again, other = draw(0), draw(0), draw(1)
    assert [tuple(b["image"].shape) for b in first] == [(2, 1, 32, 32)] * 3
    assert first[0]["label"].dtype == torch.long and type(first[0]["label"]) is torch.Tensor
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_foreground_oversampling(isbi_like):
    # Disks (class 1) are small: with foreground_fraction 1 every patch is centred on one.
    def fg_share(fraction):
        dm = _folder_dm(
            isbi_like,
            samples_per_epoch=40,
            foreground_fraction=fraction,
            augment=False,
            patch_size=[8, 8],
        )
        dm.setup("fit")
        torch.manual_seed(0)
        labels = torch.cat([b["label"] for b in dm.train_dataloader()])
        return (labels.flatten(1).any(1)).float().mean().item()

    assert fg_share(1.0) == 1.0
    assert fg_share(0.0) < 0.8


def test_bad_2d_inputs(tmp_path, tiny):
    root = tiny.make_image_folder(tmp_path / "d", n=3)
    # mask of another size
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "label" / "1.png")
    with pytest.raises(DataError, match=r"case 1: image .* is \(64, 64\) .* mask .* is \(10, 12\)"):
        _folder_dm(root, n_val=1).setup("fit")
    # label values outside the declared classes
    root2 = tiny.make_image_folder(tmp_path / "e", n=3)
    mask = np.full((64, 64), 255, np.uint8)
    mask[:3, :3] = 7
    Image.fromarray(mask).save(root2 / "label" / "0.png")
    with pytest.raises(DataError, match=r"label values \[7\] that are not among"):
        _folder_dm(root2, n_val=1).setup("fit")
    dm = _folder_dm(root2, n_val=1, unlisted_labels="background", val_ids=["1"])
    dm.setup("fit")
    assert int(dm.case("0").label[0, :3, :3].max()) == 0
    # a 3-D stack given to the 2-D module
    root3 = tiny.make_image_folder(tmp_path / "f", n=3)
    frames = [Image.fromarray(np.zeros((64, 64), np.uint8)) for _ in range(3)]
    frames[0].save(root3 / "image" / "2.tif", save_all=True, append_images=frames[1:])
    (root3 / "image" / "2.png").unlink()
    with pytest.raises(DataError, match="3-D stack"):
        _folder_dm(root3, n_val=1).setup("fit")
    # a NIfTI volume given to the 2-D module
    root4 = tiny.make_image_folder(tmp_path / "g", n=3)
    (root4 / "image" / "2.png").unlink()
    image, _ = tiny.make_volume((8, 8, 4))
    nib.save(image, str(root4 / "image" / "2.nii.gz"))
    with pytest.raises(DataError, match="NIfTI volume.*VolumeSegmentation"):
        _folder_dm(root4, n_val=1).setup("fit")
    # unmatched file names
    root5 = tiny.make_image_folder(tmp_path / "h", n=3)
    (root5 / "label" / "2.png").rename(root5 / "label" / "x.png")
    with pytest.raises(DataError, match=r"do not pair up.*\['2', 'x'\]"):
        _folder_dm(root5, n_val=1).setup("fit")


def test_map_labels():
    stored = np.array([[0, 5, 1], [2, 5, 9]])
    assert map_labels(stored, 3, [0, 5, 9], "background").tolist() == [[0, 1, 0], [0, 1, 2]]
    with pytest.raises(DataError, match=r"\[1, 2\]"):
        map_labels(stored, 3, [0, 5, 9])


# --- 3-D volumes -------------------------------------------------------------------------
def _lps_affine(spacing=(2.0, 1.5, 3.0)):
    # Stored L-P-S: x and y axes point the other way than RAS.
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [40.0, 30.0, -20.0]
    return affine


def test_volume_folder_resampling_and_orientation(tmp_path, tiny):
    root = tmp_path / "vol"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    affine = _lps_affine()
    for i in range(2):
        image, seg = tiny.make_volume((24, 20, 10), labels=(5, 1), affine=affine, seed=i)
        nib.save(image, str(root / "imagesTr" / f"c{i}_0000.nii.gz"))
        nib.save(seg, str(root / "labelsTr" / f"c{i}.nii.gz"))
    dm = VolumeSegmentation(
        str(root), num_classes=3, label_values=[0, 5, 1], spacing=[1.0, 1.0, 1.5],
        patch_size=[16, 16, 16], n_val=1,
    )  # fmt: skip
    dm.setup("fit")
    case = dm.train_cases[0]
    # 24 x 2 mm -> 48, 20 x 1.5 mm -> 30, 10 x 3 mm -> 20 voxels (by hand).
    assert case.shape == (48, 30, 20)
    pre = case.meta["preprocessed_affine"]
    assert nib.aff2axcodes(pre) == ("R", "A", "S")
    np.testing.assert_allclose(np.abs(np.diag(pre)[:3]), [1.0, 1.0, 1.5])
    assert set(case.label.unique().tolist()) == {0, 1, 2}


def test_nifti_round_trip_keeps_affine_shape_and_labels(tmp_path, tiny):
    root = tmp_path / "rt"
    root.mkdir()
    affine = _lps_affine()
    image, seg = tiny.make_volume((24, 20, 10), labels=(5, 1), affine=affine)
    nib.save(image, str(root / "img.nii.gz"))
    nib.save(seg, str(root / "seg.nii.gz"))
    dm = VolumeSegmentation(
        str(root), cases=[{"image": "img.nii.gz", "label": "seg.nii.gz", "id": "a"}],
        num_classes=3, label_values=[0, 5, 1], patch_size=[16, 16, 8],
    )  # fmt: skip
    with pytest.warns(UserWarning):
        dm.setup("fit")
    case = dm.case("a")
    # Probabilities = one-hot of the (reoriented) truth: written back, they must give the stored
    # label map exactly (reorientation is a permutation/flip of voxels).
    probs = torch.nn.functional.one_hot(case.label[0], 3).movedim(-1, 0).float()
    written = dm.write_prediction("a", probs, tmp_path)
    out = nib.load(str(written["paths"][0]))
    np.testing.assert_allclose(out.affine, affine)
    assert out.shape == (24, 20, 10)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(seg.dataobj))


def test_nifti_round_trip_with_resampling(tmp_path, tiny):
    root = tmp_path / "rs"
    root.mkdir()
    image, seg = tiny.make_volume((30, 28, 12), labels=(5,), affine=_lps_affine((3.0, 3.0, 3.0)))
    nib.save(image, str(root / "img.nii.gz"))
    nib.save(seg, str(root / "seg.nii.gz"))
    dm = VolumeSegmentation(
        str(root), cases=[{"image": "img.nii.gz", "label": "seg.nii.gz"}], num_classes=2,
        label_values=[0, 5], spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16],
    )  # fmt: skip
    with pytest.warns(UserWarning):
        dm.setup("fit")
    case = dm.train_cases[0]
    assert case.shape == (45, 42, 18)
    probs = torch.nn.functional.one_hot(case.label[0], 2).movedim(-1, 0).float()
    out = nib.load(str(dm.write_prediction(case.id, probs, tmp_path)["paths"][0]))
    assert out.shape == (30, 28, 12)
    np.testing.assert_allclose(out.affine, _lps_affine((3.0, 3.0, 3.0)))
    pred, truth = np.asarray(out.dataobj) == 5, np.asarray(seg.dataobj) == 5
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.95


def test_msd_json_layout_and_ct_normalisation(tmp_path, tiny):
    root = tiny.make_msd(tmp_path / "msd", n=3, num_classes=4, modality="CT")
    dm = VolumeSegmentation(
        str(root),
        dataset_json="dataset.json",
        normalization="auto",
        patch_size=[16, 16, 16],
        n_val=1,
    )
    assert dm.num_classes == 4 and dm.class_names == ["background", "organ1", "organ2", "organ3"]
    dm.setup("fit")
    # nnU-Net CT scheme: 0.5/99.5 percentiles and mean/std of the training foreground (by hand).
    fg = []
    for case_id in sorted(c.id for c in dm.train_cases):
        img = np.asarray(nib.load(str(root / "imagesTr" / f"{case_id}.nii.gz")).dataobj, np.float64)
        lab = np.asarray(nib.load(str(root / "labelsTr" / f"{case_id}.nii.gz")).dataobj)
        fg.append(img[lab > 0])
    fg = np.concatenate(fg)
    lo, hi = np.percentile(fg, [0.5, 99.5])
    np.testing.assert_allclose(dm.ct_clip, (lo, hi), rtol=1e-5)
    np.testing.assert_allclose(dm.ct_stats, (fg.mean(), fg.std()), rtol=1e-5)
    case = dm.val_cases[0]
    raw = np.asarray(nib.load(str(root / "imagesTr" / f"{case.id}.nii.gz")).dataobj, np.float64)
    expected = (np.clip(raw, lo, hi) - fg.mean()) / fg.std()
    np.testing.assert_allclose(case.image[0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_bad_volume_inputs(tmp_path, tiny):
    root = tmp_path / "bad"
    root.mkdir()
    image, seg = tiny.make_volume((16, 16, 8), labels=(5,))
    nib.save(image, str(root / "img.nii.gz"))
    nib.save(seg, str(root / "seg.nii.gz"))

    def dm(image_name="img.nii.gz", label_name="seg.nii.gz", **kw):
        args = dict(
            cases=[{"image": image_name, "label": label_name}],
            num_classes=2,
            label_values=[0, 5],
            patch_size=[8, 8, 8],
        )
        args.update(kw)
        return VolumeSegmentation(str(root), **args)

    # truncated file
    data = (root / "img.nii.gz").read_bytes()
    (root / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read NIfTI image .*trunc"):
        dm("trunc.nii.gz", unlisted_labels="background").setup("fit")
    # not a NIfTI at all
    with gzip.open(root / "junk.nii.gz", "wb") as f:
        f.write(b"not an image" * 100)
    with pytest.raises(DataError, match="cannot read NIfTI"):
        dm("junk.nii.gz").setup("fit")
    # missing spacing
    no_spacing = nib.Nifti1Image(np.asarray(image.dataobj), None)
    no_spacing.header["pixdim"][1:4] = 0
    nib.save(no_spacing, str(root / "nosp.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), None), str(root / "nosp_seg.nii.gz"))
    with pytest.raises(DataError, match="no voxel spacing"):
        dm("nosp.nii.gz", "nosp_seg.nii.gz", spacing=[2.0, 2.0, 2.0]).setup("fit")
    with pytest.warns(UserWarning, match="count as 1 mm"):  # no resampling: documented fallback
        dm("nosp.nii.gz", "nosp_seg.nii.gz").setup("fit")
    # a 2-D image given to the 3-D module
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)), str(root / "flat.nii.gz"))
    with pytest.raises(DataError, match="expected a 3-D volume"):
        dm("flat.nii.gz").setup("fit")
    # label on another grid
    nib.save(
        nib.Nifti1Image(np.asarray(seg.dataobj)[:, :, :6], seg.affine), str(root / "short.nii.gz")
    )
    with pytest.raises(DataError, match="same grid"):
        dm(label_name="short.nii.gz").setup("fit")
    moved = seg.affine.copy()
    moved[0, 3] += 7
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), moved), str(root / "moved.nii.gz"))
    with pytest.raises(DataError, match="affines of the image and of label"):
        dm(label_name="moved.nii.gz").setup("fit")
    # undeclared label values (labels 5 and 1 in the volume, only 5 declared)
    image2, seg2 = tiny.make_volume((16, 16, 8), labels=(5, 1))
    nib.save(seg2, str(root / "seg2.nii.gz"))
    with pytest.raises(DataError, match=r"label values \[1\]"):
        dm(label_name="seg2.nii.gz").setup("fit")
    # a missing json
    with pytest.raises(DataError, match="cannot read dataset json"):
        VolumeSegmentation(str(root), dataset_json="nope.json").setup("fit")


def test_volume_smaller_than_the_patch_is_padded_with_a_warning(tmp_path, tiny):
    root = tiny.make_ct_example(tmp_path / "ct", shape=(20, 18, 6))
    dm = VolumeSegmentation(
        str(root), cases=[{"image": "ct.nii.gz", "label": "seg.nii.gz"}], num_classes=4,
        label_values=[0, 5, 1, 2], patch_size=[16, 16, 16], samples_per_epoch=2, batch_size=2,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    assert any(
        "smaller than the patch" in str(w.message) and "zero-padded" in str(w.message)
        for w in caught
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16)


def test_nnunet_channel_files_are_stacked(tmp_path, tiny):
    root = tmp_path / "mc"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    for i in range(2):
        image, seg = tiny.make_volume((12, 12, 8), labels=(1,), seed=i)
        nib.save(image, str(root / "imagesTr" / f"p{i}_0000.nii.gz"))
        nib.save(image, str(root / "imagesTr" / f"p{i}_0001.nii.gz"))
        nib.save(seg, str(root / "labelsTr" / f"p{i}.nii.gz"))
    dm = VolumeSegmentation(str(root), num_classes=2, patch_size=[8, 8, 8], n_val=1)
    dm.setup("fit")
    assert dm.in_channels == 2 and sorted(c.id for c in dm.train_cases + dm.val_cases) == [
        "p0",
        "p1",
    ]
    assert json.dumps(dm.class_names) == '["class0", "class1"]'


def test_nnunet_2d_names_pair(tmp_path, tiny):
    root = tiny.make_image_folder(tmp_path / "nn", n=3)
    for path in sorted((root / "image").iterdir()):
        path.rename(path.with_name(path.stem + "_0000.png"))
    dm = _folder_dm(root, n_val=1)
    dm.setup("fit")
    assert sorted(c.id for c in dm.train_cases + dm.val_cases) == ["0", "1", "2"]
    (root / "image" / "0_0001.png").write_bytes((root / "image" / "0_0000.png").read_bytes())
    with pytest.raises(DataError, match="channels in separate files"):
        _folder_dm(root, n_val=1).setup("fit")
