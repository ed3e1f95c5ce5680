"""Label store: saves from two tabs (threads) or two servers (stores) on one folder lose nothing."""

from __future__ import annotations

import threading

from drustage.data.crops import extract_context_crops
from drustage.data.layout import read_dataset
from drustage.service.labelling import LabelStore


def _label(store, image_id, radius="R9", box=(10.0, 20.0, 110.0, 140.0)):
    return store.save(image_id, {"radius": radius, "ulna": "U7"}, {"radius": box, "ulna": (120.0, 25.0, 180.0, 130.0)},
                      "R")


def test_plain_folder_gets_ids_and_next_unlabelled(label_dir):
    store = LabelStore(label_dir)
    assert len(store.ids()) == 4 and store.next_unlabelled() == store.ids()[0]
    _label(store, store.ids()[0])
    assert store.next_unlabelled() == store.ids()[1]
    assert store.next_unlabelled(after=store.ids()[3]) == store.ids()[1]  # wraps round


def test_concurrent_saves_from_threads_and_stores_keep_every_label(label_dir):
    first, second = LabelStore(label_dir), LabelStore(label_dir)  # e.g. two server processes
    ids = first.ids()
    errors = []

    def work(store, image_id, stage):
        try:
            for _ in range(15):
                _label(store, image_id, stage)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(store, image_id, stage))
               for store, image_id, stage in ((first, ids[0], "R8"), (first, ids[1], "R9"),
                                              (second, ids[2], "R10"), (second, ids[3], "R11"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    saved = {r.image_id: r for r in read_dataset(label_dir).records}
    assert [saved[i].stages["radius"].code for i in ids] == ["R8", "R9", "R10", "R11"]


def test_labelled_folder_is_a_dataset_the_training_commands_read(label_dir):
    store = LabelStore(label_dir)
    for image_id in store.ids():
        _label(store, image_id)
    dataset = read_dataset(label_dir)
    assert (label_dir / "dataset.json").is_file()
    crops = extract_context_crops(dataset, progress=False)
    assert set(crops) == set(store.ids()) and crops[store.ids()[0]]["radius"].shape == (160, 120)
    # a second store on the same folder reads the saved labels back
    assert LabelStore(label_dir).records == store.records
