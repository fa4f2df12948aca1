"""The augmentation group's knobs, torch-free: each knob's value that switches its transform off. dlopt.data.augment
builds the transforms; dlopt.checks reads this table before torch is imported (data.label_changing)."""

OFF = {"hflip_p": 0, "vflip_p": 0, "rotate_deg": 0, "translate": 0, "scale": None, "crop_padding": 0,
       "resized_crop": None, "color_jitter": 0, "erasing_p": 0, "policy": "none", "cutmix_alpha": 0,
       "noise_std": 0, "mixup_alpha": 0}
