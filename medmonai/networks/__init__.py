"""Networks (classifiers, segmenters, pretrained backbones); filled by the classification and segmentation work."""
