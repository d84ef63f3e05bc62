"""SQLModel's tutorial code on the gateway, with only the URL changed."""

from __future__ import annotations

import pytest

sqlmodel = pytest.importorskip("sqlmodel")

from sqlmodel import Field, Session, SQLModel, create_engine, select  # noqa: E402

from sqlite_gateway.integrations import registry  # noqa: E402


class Hero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    secret_name: str
    age: int | None = Field(default=None, index=True)


def test_the_sqlmodel_tutorial_runs_with_only_the_url_changed(tmp_path):
    # The tutorial's own line, check_same_thread and all; only the scheme differs.
    engine = create_engine(f"sqlite+gateway:///{tmp_path / 'database.db'}",
                           connect_args={"check_same_thread": False})
    try:
        SQLModel.metadata.create_all(engine)
        heroes = [Hero(name="Deadpond", secret_name="Dive Wilson"),
                  Hero(name="Spider-Boy", secret_name="Pedro Parqueador"),
                  Hero(name="Rusty-Man", secret_name="Tommy Sharp", age=48)]
        with Session(engine) as session:
            for hero in heroes:
                session.add(hero)
            session.commit()
            session.refresh(heroes[2])
            assert heroes[2].id == 3
        with Session(engine) as session:
            assert session.exec(select(Hero).where(Hero.age > 30)).one().name == "Rusty-Man"
            assert session.exec(select(Hero).where(Hero.age > 100)).all() == []
            hero = session.exec(select(Hero).where(Hero.name == "Spider-Boy")).one()
            hero.age = 16
            session.add(hero)
            session.commit()
            session.delete(session.get(Hero, 1))
            session.commit()
        with Session(engine) as session:
            assert [(h.name, h.age) for h in session.exec(select(Hero).order_by(Hero.id))] == [
                ("Spider-Boy", 16), ("Rusty-Man", 48)]
    finally:
        engine.dispose()
        registry.close_all()
