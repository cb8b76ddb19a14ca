"""What the built-in domains (vendor/domains.json) must hold, shared by the react-index and react-eval tests.

Written out here, not read from vendor/make_domains.py, so that the tests state the requirement.
"""

# ELEVATER's 20 image-classification datasets, by their CLIP_benchmark names.
ELEVATER = ("caltech101", "cars", "cifar10", "cifar100", "country211", "dtd", "eurosat", "fer2013", "fgvc_aircraft",
            "flowers", "food101", "gtsrb", "hateful_memes", "kitti_closest_vehicle_distance", "mnist", "pcam", "pets",
            "renderedsst2", "resisc45", "voc2007_multilabel")

# The class lists CLIP_benchmark reads from torchvision at load time (taken from OpenAI CLIP's prompts.md):
# name -> (number of classes = the dataset's, first class, last class), in the dataset's label order.
FROM_OPENAI_PROMPTS = {
    "cifar10": (10, "airplane", "truck"),
    "cifar100": (100, "apple", "worm"),
    "food101": (101, "apple pie", "waffles"),
    "cars": (196, "AM General Hummer SUV 2000", "smart fortwo Convertible 2012"),
    "fgvc_aircraft": (100, "707-320", "Yak-42"),
    "dtd": (47, "banded", "zigzagged"),
    "resisc45": (45, "airplane", "wetland"),
    "sun397": (397, "abbey", "youth hostel"),
    "stl10": (10, "airplane", "truck"),
    "voc2007": (20, "aeroplane", "tvmonitor"),
    "voc2007_multilabel": (20, "aeroplane", "tvmonitor"),
    "renderedsst2": (2, "negative", "positive"),
    "hateful_memes": (2, "meme", "hatespeech meme"),
}

# VOC2007 in CLIP_benchmark's label order (datasets/voc2007.py), not prompts.md's listing order.
VOC2007 = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
           "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
