"""Opens each image with Pillow; returns '<file name>: <width>x<height> <mean>'. A corrupt file raises."""

import os

from PIL import Image, ImageStat


def run(mini_batch):
    rows = []
    for path in mini_batch:
        with Image.open(path) as image:
            image.load()
            mean = ImageStat.Stat(image.convert("L")).mean[0]
            rows.append(f"{os.path.basename(path)}: {image.width}x{image.height} {mean:.1f}")
    return rows
