"""Network definitions: the layer stack of each dlib model, top (loss side) to bottom (input).

dlib's files hold each layer's parameters but not how the layers connect (tags, skips and
residual sums live in C++ template types), so the stacks are transcribed here from the
network definitions in dlib's examples: dnn_face_recognition_ex.cpp (`anet_type`) and
dnn_mmod_face_detection_ex.cpp (`net_type`). Each entry is a layer kind ("con", "affine",
"relu", "max_pool", "avg_pool", "add_prev", "fc") or a tag ("tag1") or skip ("skip1"); an
"add_prev" entry carries the tag it adds, e.g. "add_prev1".
"""

from __future__ import annotations


def _block(n_tag_below: list[str]) -> list[str]:
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return ["affine", "con", "relu", "affine", "con", *n_tag_below]


def _ares(below: list[str]) -> list[str]:
    # ares = relu<residual<block,N,affine,SUBNET>>, residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
    return ["relu", "add_prev1", *_block(["tag1", *below])]


def _ares_down(below: list[str]) -> list[str]:
    # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
    return ["relu", "add_prev2", "avg_pool", "skip1", "tag2", *_block(["tag1", *below])]


def resnet_face_recognition() -> list[str]:
    """anet_type of dnn_face_recognition_ex.cpp (dlib_face_recognition_resnet_model_v1.dat)."""
    stack = ["max_pool", "relu", "affine", "con"]  # max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input>>>>
    for _ in range(3):  # alevel4 = ares<32,ares<32,ares<32,SUBNET>>>
        stack = _ares(stack)
    stack = _ares_down(stack)  # alevel3 = ares<64,ares<64,ares<64,ares_down<64,SUBNET>>>>
    for _ in range(3):
        stack = _ares(stack)
    stack = _ares_down(stack)  # alevel2 = ares<128,ares<128,ares_down<128,SUBNET>>>
    for _ in range(2):
        stack = _ares(stack)
    stack = _ares_down(stack)  # alevel1 = ares<256,ares<256,ares_down<256,SUBNET>>>
    for _ in range(2):
        stack = _ares(stack)
    stack = _ares_down(stack)  # alevel0 = ares_down<256,SUBNET>
    return ["fc", "avg_pool", *stack]  # loss_metric<fc_no_bias<128,avg_pool_everything<...>>>


def mmod_face_detector() -> list[str]:
    """net_type of dnn_mmod_face_detection_ex.cpp (mmod_human_face_detector.dat)."""
    rcon5 = ["relu", "affine", "con"]  # relu<affine<con5<45,SUBNET>>>
    downsampler = ["relu", "affine", "con"] * 3  # three relu<affine<con5d<...>>>
    return ["con", *rcon5, *rcon5, *rcon5, *downsampler]  # loss_mmod<con<1,9,9,1,1,...>>
