"""Index arithmetic of reshaping: where a logical (NCHW-order) position of an example lies in a channels-last buffer."""


def channels_last_index(j, c, h, w):
    """The physical position, in an example stored (h, w, c), of the logical (c, h, w) position j."""
    ch = j // (h * w)
    return (j - ch * h * w) * c + ch
